"""What CLI commands share: the store, the machine's compile options, and error reporting."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from corral.cli import output
from corral.compiler.compile import CompileOptions
from corral.compiler.errors import CompileError
from corral.machine.gpus import NvmlProbe
from corral.machine.memory import available_memory
from corral.errors import CorralError
from corral.dsl.errors import DefinitionError, Diagnostic
from corral.store.store import Store


def store() -> Store:
    """The store under CORRAL_MODELS (default ~/.corral/models)."""
    return Store.default()


@lru_cache(maxsize=1)
def compile_options() -> CompileOptions:
    """This machine's readings, taken once (GPUs from NVML, empty with the reason when there are
    none; available memory), and the slot count."""
    parallel = int(os.environ.get("CORRAL_NUM_PARALLEL", "0") or 0)  # 0: as the memory plan allows
    return CompileOptions(inventory=NvmlProbe().read(), memory_bytes=available_memory(),
                          num_parallel=max(0, parallel))


def report(e: CorralError) -> None:
    """Print an error the way compilers do, with the source line when the error has a position."""
    if isinstance(e, DefinitionError):
        output.diagnostics(e.diagnostics)
    elif isinstance(e, CompileError):
        output.err(e.diagnostic(_source_line(e)).render())
    else:
        render = getattr(e, "render", None)
        output.err(render() if callable(render) else f"error: {e}")


def _source_line(e: CompileError) -> str | None:
    if e.span is None:
        return None
    try:
        lines = Path(e.span.path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return lines[e.span.line - 1] if 0 < e.span.line <= len(lines) else None


__all__ = ["Diagnostic", "compile_options", "report", "store"]
