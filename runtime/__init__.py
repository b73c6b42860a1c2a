"""corral.runtime: running models for a server or a command: what runs where and when, and how
a request becomes an engine request.

Owns `build_runtime` (compose.py, the one composition root: store, catalog, library, scheduler),
the Scheduler (scheduler.py: load on first use, keep-alive, eviction by count and memory, the
bounded queue), and request planning (inference.py: prompt, stops, sampling defaults,
`structured` output grammars, `tools`, the `thinking` parsers, and `think_first`: thinking
before a grammar holds the answer), whose refusals are `errors`' RequestError. The server and `corral run` both go through it.

May import: corral.errors, corral.config, corral.machine, corral.dsl, corral.compiler,
corral.store, corral.sources, corral.engine.
"""
