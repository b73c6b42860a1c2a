"""How a `corral` command ends: one exit code per outcome, and the usage error.

Handlers return an `ExitCode`; a Corral error they do not handle themselves propagates to
`corral.cli.main.main`, which prints it (`context.report`) and turns it into its code (`exit_code`):
`UsageError` (the command was called with something it cannot use) exits 2, like argparse's own
usage errors, every other CorralError exits 1.
"""

from __future__ import annotations

from enum import IntEnum

from corral.errors import CorralError


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # a Corral error: an invalid definition, a missing model, no server, a failed change
    USAGE = 2  # the command was called wrongly (argparse exits 2 too)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


class UsageError(CorralError):
    """The command was called with something it cannot use: `PROG: error: MESSAGE`, exit 2.

    `prog` is what the line starts with (`corral check`, or `corral` alone); a message of several
    lines gives one `PROG: error:` line each (every bad CORRAL_* variable, say).
    """

    def __init__(self, prog: str, message: str):
        self.prog = prog
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.prog, self.message))

    def render(self) -> str:
        return "\n".join(f"{self.prog}: {CorralError(line).render()}" for line in self.message.splitlines())


def exit_code(error: CorralError) -> ExitCode:
    """The exit code a command that failed with `error` ends with."""
    return ExitCode.USAGE if isinstance(error, UsageError) else ExitCode.ERROR
