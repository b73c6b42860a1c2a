"""Build llama.cpp's `llama-server` and `llama-batched-bench` once, from the sources Corral runs.

    python bench/llamacpp_build.py        # prints the folder holding the two binaries

The llama.cpp compared against must be the one inside llama-cpp-python, or the comparison measures
two llama.cpps. So the sources come from that package's sdist at the installed version (`pip
download --no-binary`), and the binaries are cached under the user cache dir, keyed by version:
a second run costs nothing. CUDA is switched on when `nvidia-smi` finds a GPU.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import platformdirs

log = logging.getLogger("bench.llamacpp_build")
TARGETS = ("llama-server", "llama-batched-bench")


def installed_version() -> str:
    from importlib.metadata import version

    return version("llama_cpp_python")


def has_gpu() -> bool:
    """True when nvidia-smi runs and lists a GPU."""
    if shutil.which("nvidia-smi") is None:
        return False
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return done.returncode == 0 and "GPU" in done.stdout


def cache_dir(version: str, cuda: bool) -> Path:
    flavour = "-cuda" if cuda else ""
    return Path(platformdirs.user_cache_dir("corral")) / f"llama.cpp-{version}{flavour}"


def _sources(version: str, into: Path) -> Path:
    """Download the sdist and unpack its vendor/llama.cpp; return that folder."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "--quiet", "-d", str(into), f"llama-cpp-python=={version}"], check=True)
    sdist = next(into.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        tar.extractall(into, filter="data")
    return next(into.glob("llama_cpp_python-*/vendor/llama.cpp"))


def build(version: str | None = None) -> Path:
    """Folder holding the two binaries, building them first if they are not cached."""
    version = version or installed_version()
    cuda = has_gpu()
    out = cache_dir(version, cuda)
    if all((out / t).exists() for t in TARGETS):
        return out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="corral-llamacpp-") as tmp:
        src = _sources(version, Path(tmp))
        build_dir = Path(tmp) / "build"
        flags = ["-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DCMAKE_BUILD_TYPE=Release",
                 "-DLLAMA_BUILD_TESTS=OFF", f"-DGGML_CUDA={'ON' if cuda else 'OFF'}"]
        log.info("configuring llama.cpp %s (%s)", version, "CUDA" if cuda else "CPU")
        subprocess.run(["cmake", "-S", str(src), "-B", str(build_dir), *flags], check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", str(build_dir), "-j", jobs, "--target", *TARGETS], check=True)
        for target in TARGETS:
            shutil.copy2(next(build_dir.rglob(f"bin/{target}")), out / target)
        # The binaries link llama.cpp's shared libraries (BUILD_SHARED_LIBS is on by default).
        for lib in build_dir.rglob("*.so*"):
            shutil.copy2(lib, out / lib.name)
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(build())
