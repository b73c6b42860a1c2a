"""Fixtures shared by every test package, and the seal around every test.

The whole session runs with its home, caches, config, store and server address in a temporary
folder (set here, before any fixture runs), and each test gets fresh ones of its own, so no test
reads or writes what the user has (see tests/sealed.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests keep several model workers alive at once on few cores; spinning OpenMP threads would slow
# each other down many times over, so the workers these tests spawn wait passively: the ones a
# `corral` command or server starts (CORRAL_OMP_WAIT_POLICY, read by its Settings) and the ones a
# test's own Engine starts (they inherit OMP_WAIT_POLICY).
os.environ.setdefault("CORRAL_OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_WAIT_POLICY", os.environ["CORRAL_OMP_WAIT_POLICY"])

from tests import models
from tests.sealed import sealed_environment

REPO = Path(__file__).resolve().parent.parent
CONFORMANCE = REPO / "tests" / "conformance" / "ollama-templates"

# Session-wide seal: module- and session-scoped fixtures run before any function-scoped one, so
# they too must never see the user's folders.
_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="corral-tests-"))
_USER_ENVIRONMENT = dict(os.environ)
os.environ.clear()
os.environ.update(sealed_environment(_SESSION_ROOT, _USER_ENVIRONMENT, library=False))


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_SESSION_ROOT, ignore_errors=True)


@pytest.fixture(autouse=True)
def sealed(tmp_path_factory, monkeypatch) -> dict[str, str]:
    """Each test's own home, caches, config, store and an address where no server listens."""
    root = tmp_path_factory.mktemp("sealed")
    env = sealed_environment(root, library=False)
    for name in list(os.environ):
        if name not in env:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1, a real instruct model with a Jinja chat template."""
    return models.smollm2()


@pytest.fixture(scope="session")
def gemma3_gguf() -> Path:
    """Gemma 3 270M Q4_K_M, a second architecture and template."""
    return models.gemma3()


@pytest.fixture(scope="session")
def conformance() -> Path:
    """Ollama's chat-template test corpus, kept in tests/conformance with its MIT licence."""
    return CONFORMANCE
