"""corral.runtime: which model runs where and when: the scheduler over the engine.

Owns the Scheduler (scheduler.py): load on first use, keep-alive, eviction by count and memory,
the bounded queue.

May import: corral.errors, corral.config, corral.machine, corral.dsl, corral.compiler,
corral.store, corral.sources, corral.engine.
"""
