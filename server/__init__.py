"""corral.server: the Sanic app: Ollama's API (/api), the OpenAI API (/v1) and the library watcher.

Owns the app factory (app.py), the request schemas, each API's routes and error rendering,
streaming, and hot reload of the library folder (library_watch.py, library_api.py).

May import: every layer below (errors, config, machine, dsl, compiler, store, sources, engine,
runtime); never corral.cli.
"""
