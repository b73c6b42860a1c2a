"""Fixtures of the hostile-input corpus: a live server (the real store, models and scheduler over
scripted engines, as in tests/server), and the checks every case makes of a refusal.

Each case asserts the exact safe outcome: a 4xx with a JSON error, no host path, traceback or
environment value in the body, nothing written outside the store, and the server still answering
/api/version.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

# The live server is tests/server's: `serve(**settings)` and `fake` (fake_store: their store).
from tests.server.conftest import FakeServer, fake, fake_store, serve  # noqa: F401


def host_paths(server: FakeServer) -> list[str]:
    """Strings that must never appear in an answer: the store, the home and temp folders."""
    paths = {str(server.store.root), str(server.store.root.parent), str(Path.home()), os.getcwd(), "/tmp/"}
    return sorted(p for p in paths if len(p) > 1)


def assert_refused(server: FakeServer, response: httpx.Response, status: int) -> dict[str, Any]:
    """`response` is `status` with a JSON error naming no host path, and the server still answers."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    error = body["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert isinstance(message, str) and message
    for path in host_paths(server):
        assert path not in response.text, response.text
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert_alive(server)
    return body


def assert_alive(server: FakeServer) -> None:
    """The server still answers /api/version."""
    r = server.client.get("/api/version", timeout=5)
    assert r.status_code == 200 and "version" in r.json()


def files_under(root: Path) -> set[str]:
    """Every file below `root`, as paths relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
