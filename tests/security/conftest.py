"""Fixtures of the hostile-input corpus: a live server (the real store, models and scheduler over
scripted engines, as in tests/server), and the checks every case makes of a refusal.

Each case asserts the exact safe outcome: a 4xx with a JSON error, no host path, traceback or
environment value in the body, nothing written outside the store, and the server still answering
/api/version.
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from corral.config.settings import Settings
from corral.runtime.scheduler import Scheduler, SchedulerSettings
from corral.server.app import create_app
from corral.sources.catalog import Catalog
from corral.sources.stored import Models
from corral.store.store import Store
from tests.server.conftest import CPU, FakeServer, fake_store  # noqa: F401  (fake_store: a fixture)
from tests.server.fakes import ScriptedEngines
from tests.server.live import LiveServer

Serve = Callable[..., FakeServer]


@pytest.fixture
def serve(tmp_path, fake_store) -> Iterator[Serve]:  # noqa: F811
    """`serve(**settings)`: a live server over a copy of the fake store (smol, toolsmodel) with
    those settings; every server started is stopped when the test ends."""
    with ExitStack() as stack:
        count = 0

        def start(**fields: Any) -> FakeServer:
            nonlocal count
            count += 1
            settings = Settings(models=tmp_path / f"server{count}" / "models", **fields)
            shutil.copytree(fake_store, settings.models)
            store = Store(settings.models)
            models = Catalog(Models(store, CPU))
            engines = ScriptedEngines()
            scheduler = Scheduler(models, SchedulerSettings(keep_alive=settings.keep_alive_seconds,
                                                            max_loaded_models=settings.max_loaded_models,
                                                            max_queue=settings.max_queue),
                                  engine_factory=engines)
            app = create_app(settings, scheduler=scheduler, models=models, store=store,
                             name=f"security{count}")
            server = stack.enter_context(LiveServer(app))
            client = stack.enter_context(httpx.Client(base_url=server.url, timeout=30))
            return FakeServer(server, client, settings, store, models, scheduler, engines)

        yield start


@pytest.fixture
def fake(serve) -> FakeServer:
    """A live server with the default settings (listening on loopback)."""
    return serve()


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
