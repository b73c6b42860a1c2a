"""corral.store: the content-addressed model store, in Ollama's on-disk layout.

`names` parses model names, `manifest` the Docker v2 manifests, `store` keeps blobs and
manifests, `layers` reads a stored model back as a definition, `create` writes a compiled
definition into the store; `errors` is the StoreError tree; `files` writes a file whole or not at
all and hashes one (the CLI uses these too). The CLI uses the store without the engine.

May import: corral.errors, corral.config, corral.machine, corral.dsl, corral.compiler.
"""
