"""The base of every error Corral reports to a user, below all layers, and the one way hints render.

Owns `CorralError` (a message and a hint) and `render` (how a message, its place, its source line
and its hint are written for a person: the compiler style every command prints). Imports nothing
of Corral's: every layer (dsl, compiler, store, engine, runtime, server, cli) derives its own
errors from `CorralError`, and the server alone decides their HTTP status (corral.server.errors).
"""

from __future__ import annotations


def render(message: str, hint: str | None = None, *, where: str | None = None, severity: str = "error",
           excerpt: str | None = None) -> str:
    """`[WHERE: ]SEVERITY: MESSAGE`, then the source excerpt, then `hint: HINT`, one per line."""
    lines = [(f"{where}: " if where else "") + f"{severity}: {message}"]
    if excerpt:
        lines.append(excerpt)
    if hint:
        lines.append(f"hint: {hint}")
    return "\n".join(lines)


class CorralError(Exception):
    """Base of every error Corral reports to a user: what went wrong, and what to do about it.

    `str(error)` is the message alone (what an API sends as its error text); `render()` adds the
    hint, as the command line prints it.
    """

    def __init__(self, message: str = "", hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.message, self.hint))

    def render(self) -> str:
        """`error: MESSAGE`, then `hint: HINT` when there is one (the form the CLI prints)."""
        return render(self.message, self.hint)
