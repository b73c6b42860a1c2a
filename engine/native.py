"""llama.cpp's native library, loaded first thing in a model's worker process.

On the CUDA build of llama-cpp-python (seen on an H100), a process that had loaded numpy first
(through the gguf package) segfaulted in llama_model_load_from_file. A worker is spawned, so
before it runs anything of Corral's it re-imports its parent's entry module, and with it
corral.cli.main, which pulls numpy in; `corral.cli.main` therefore calls `load_in_worker()` before
its other imports. This module imports nothing itself, so it can come first.

Only a spawned process loads the library here: the server process (and `corral run`'s) never
imports llama_cpp at all; the workers do the model work.
"""

from __future__ import annotations

import sys


def spawned() -> bool:
    """Whether this process is a child started by multiprocessing's 'spawn' (a model worker)."""
    return "--multiprocessing-fork" in getattr(sys, "orig_argv", ())


def load_in_worker() -> None:
    """Import llama_cpp now when this process is a spawned worker; elsewhere do nothing."""
    if not spawned():
        return
    try:
        import llama_cpp  # noqa: F401
    except ImportError:  # the serve extra is not installed; loading the model says so itself
        pass
