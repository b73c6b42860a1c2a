"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests keep several model workers alive at once on few cores; spinning OpenMP threads would slow
# each other down many times over, so the workers these tests spawn wait passively.
os.environ.setdefault("CORRAL_OMP_WAIT_POLICY", "PASSIVE")

from tests import models

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1, a real instruct model with a Jinja chat template."""
    return models.smollm2()


@pytest.fixture(scope="session")
def gemma3_gguf() -> Path:
    """Gemma 3 270M Q4_K_M, a second architecture and template."""
    return models.gemma3()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (conformance data and references)."""
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the shared/ folder must sit beside the checkout")
    return SHARED
