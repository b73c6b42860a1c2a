"""Facts learnt about this machine that later processes should not learn again the hard way.

Where llama.cpp's repacked CPU weights (AMX kernels) crash, the first load finds out by crashing
once; the answer is kept in the user's cache folder, keyed by CPU and llama-cpp-python version,
so `corral run` does not crash and warn on every start.
"""

from __future__ import annotations

import hashlib
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "corral"


def _key() -> str:
    try:
        cpu = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith(("model name", "flags"))), "")
    except OSError:
        cpu = ""
    try:
        llama = version("llama-cpp-python")
    except PackageNotFoundError:
        llama = "?"
    return hashlib.sha256(f"{cpu}|{llama}".encode()).hexdigest()[:16]


def repack_crashes() -> bool:
    """Whether an earlier process saw repacked CPU weights crash here (CORRAL_CPU_REPACK=on/off overrides)."""
    forced = os.environ.get("CORRAL_CPU_REPACK", "").lower()
    if forced in ("on", "off"):
        return forced == "off"
    return (_cache_dir() / f"cpu-repack-crashes-{_key()}").exists()


def remember_repack_crashes() -> None:
    try:
        folder = _cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"cpu-repack-crashes-{_key()}").write_text("llama.cpp's repacked CPU weights crashed here\n")
    except OSError:
        pass  # only a cache: the next process finds out again
