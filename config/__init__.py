"""corral.config: settings read once from `CORRAL_*` variables, and Ollama-style durations.

May import: corral.errors only.
"""
