"""corral.config: settings read once from `CORRAL_*` variables, Ollama-style durations, and the
versions Corral reports (version.py).

May import: corral.errors only.
"""
