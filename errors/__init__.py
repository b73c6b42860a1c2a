"""The base of every error Corral reports to a user, below all layers.

Owns `CorralError` (a message and a hint). Imports nothing of Corral's: every layer (dsl,
compiler, store, engine, runtime, server, cli) derives its own errors from it.
"""

from __future__ import annotations


class CorralError(Exception):
    """Base of every error Corral reports to a user: what went wrong, and what to do about it."""

    def __init__(self, message: str = "", hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.message, self.hint))

    def render(self) -> str:
        """`error: MESSAGE`, then `hint: HINT` when there is one (the form the CLI prints)."""
        return f"error: {self.message}" + (f"\nhint: {self.hint}" if self.hint else "")
