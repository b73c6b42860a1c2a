"""Facts learnt about this machine that later processes should not learn again the hard way.

Where llama.cpp's repacked CPU weights (AMX kernels) crash, the first load finds out by crashing
once; the answer is kept in the user's cache folder, keyed by CPU and llama-cpp-python version,
so `corral run` does not crash and warn on every start. The cache folder is platformdirs' (on
Linux `$XDG_CACHE_HOME/corral`, else `~/.cache/corral`); the user's override (CORRAL_CPU_REPACK,
read by corral.config.Settings) comes in as an argument.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

import platformdirs


def _cache_dir() -> Path:
    return platformdirs.user_cache_path("corral", appauthor=False)


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


def repack_crashes(forced: Literal["on", "off"] | None = None) -> bool:
    """Whether to avoid repacked CPU weights: `forced` ("off" avoids them, "on" uses them) when given,
    else whether an earlier process saw them crash here."""
    if forced is not None:
        return forced == "off"
    return (_cache_dir() / f"cpu-repack-crashes-{_key()}").exists()


def remember_repack_crashes() -> None:
    try:
        folder = _cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"cpu-repack-crashes-{_key()}").write_text("llama.cpp's repacked CPU weights crashed here\n")
    except OSError:
        pass  # only a cache: the next process finds out again
