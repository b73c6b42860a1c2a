"""What CLI commands share: the settings, the store, the machine's compile options, error reporting.

A command reads `settings()` once, at its start, and passes what it needs down: `store(s)`,
`compile_options(s)`, `running_server(s.host)`. Nothing below the CLI reads a CORRAL_* variable.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from corral.cli import output
from corral.cli.exit import UsageError
from corral.compiler.compile import CompileOptions
from corral.compiler.errors import CompileError
from corral.config.settings import Settings, problems
from corral.errors import CorralError
from corral.dsl.errors import DefinitionError, Diagnostic
from corral.store.store import Store


def settings(prog: str = "corral", **overrides: object) -> Settings:
    """Every CORRAL_* setting, read from the environment now (`overrides` win, as a command's flags).

    A bad value is a usage error naming its variable, one line per bad variable.
    """
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise UsageError(prog, "\n".join(problems(e))) from None


def store(s: Settings | None = None) -> Store:
    """The store under CORRAL_MODELS (default ~/.corral/models)."""
    return Store((s or settings()).models)


@lru_cache(maxsize=1)
def _machine() -> CompileOptions:
    """This machine's readings, taken once per process."""
    from corral.runtime import compose  # lazily: commands that compile nothing never load the runtime

    return compose.machine_options()


def compile_options(s: Settings | None = None) -> CompileOptions:
    """The machine's readings and the settings' slot count (0: as the memory plan allows)."""
    from corral.runtime import compose

    return compose.compile_options(s or settings(), _machine())


def report(e: CorralError) -> None:
    """Print an error the way compilers do, with the source line when the error has a position."""
    if isinstance(e, DefinitionError):
        output.diagnostics(e.diagnostics)
    elif isinstance(e, CompileError):
        output.err(e.diagnostic(_source_line(e)).render())
    else:
        output.err(e.render())


def _source_line(e: CompileError) -> str | None:
    if e.span is None:
        return None
    try:
        lines = Path(e.span.path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return lines[e.span.line - 1] if 0 < e.span.line <= len(lines) else None


__all__ = ["Diagnostic", "compile_options", "report", "settings", "store"]
