"""corral.compiler.gguf: GGUF files read without loading weights.

`check` walks the header with bounds on every length and count before anything trusts the file
(the `gguf` package trusts them); `info` reads the metadata and tensor sizes the plan needs.

May import: corral.errors, corral.compiler.errors.
"""
