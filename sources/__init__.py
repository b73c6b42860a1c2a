"""corral.sources: where runnable specs come from.

`stored` compiles models of the store into specs, `library` a folder of definition files (with
the last good spec kept when an edit breaks one), `bases` the registry models those definitions
name and the store lacks (pulled in the background, retried), `catalog` both together, as the
server sees them, and `describe` what /api/show and /api/tags say of a model from either source.

May import: corral.errors, corral.config, corral.machine, corral.dsl, corral.compiler, corral.store,
corral.registry.
"""
