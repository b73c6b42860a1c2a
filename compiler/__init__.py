"""corral.compiler: a validated definition (IR) -> a RuntimeSpec, with no I/O beyond reading the GGUF.

Owns the compile step (compile.py), the spec it produces (spec.py), the resolver protocol for
`FROM <model name>` (resolve.py), the memory plan (plan.py), which thinking format a spec has
(thinking.py), what a model can do (capabilities.py) and its errors (errors.py); and three
engines of its own, each a package: `gotemplate/` (Ollama's Go templates -> Jinja), `gguf/` (the
bounded header check and metadata reading) and `templates/` (chat templates: Ollama's named
library, the Jinja sandbox, prompt rendering).

May import: corral.errors, corral.machine (readings as plain data), corral.dsl.
"""
