"""corral.engine: running one loaded model on llama.cpp, in a worker process of its own.

`process` is the server side (the Engine: spawn, stream, restart after a crash); `worker` runs in
the child process, where `native` loads llama.cpp first, `llama` (with `sampling`, the only
modules that use llama_cpp; no module outside this package imports it), `batching`
(continuous batching over sequence slots), `sampling` and `stops` do the work; `requests` is the
data that crosses the process boundary; `errors` the EngineError tree.

May import: corral.errors, corral.config, corral.machine, corral.dsl, corral.compiler.
"""
