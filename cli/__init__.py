"""corral.cli: the `corral` command.

Owns argument parsing (main.py) and one module per group of commands. Talks to a running server
over HTTP (client.py) and otherwise works on the store or starts the engine in-process.

May import: every other layer.
"""
