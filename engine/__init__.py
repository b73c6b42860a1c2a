"""corral.engine: running one loaded model on llama.cpp, in a worker process of its own.

`process` is the server side (the Engine: spawn, stream, restart after a crash); `worker` runs in
the child process, where `llama` (the only module that imports llama_cpp), `batching`
(continuous batching over sequence slots), `sampling` and `stops` do the work; `requests` is the
data that crosses the process boundary; `errors` the EngineError tree.

May import: corral.errors, corral.config, corral.machine, corral.dsl, corral.compiler.
"""
