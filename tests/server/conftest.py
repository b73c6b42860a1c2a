"""Fixtures of the server tests: a live server over fakes, and one over the real runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import httpx
import pytest
from sanic import Sanic

from corral.server.app import create_app
from corral.config.settings import Settings
from tests.server.fakes import CHATML_TOOLS, FakeEngine, FakeModels, FakeScheduler, make_spec
from tests.server.live import LiveServer

# Every test builds its own app under the same name; Sanic's registry allows that in test mode.
Sanic.test_mode = True


@dataclass
class FakeServer:
    server: LiveServer
    client: httpx.Client
    models: FakeModels
    scheduler: FakeScheduler
    engine: FakeEngine

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def fake(tmp_path) -> Iterator[FakeServer]:
    """A live server whose models are fakes: `smol` (chatml) and `toolsmodel` (renders tools itself)."""
    models = FakeModels(make_spec("smol:latest", system="You are Smol."),
                        make_spec("toolsmodel:latest", template=CHATML_TOOLS))
    engine = FakeEngine()
    scheduler = FakeScheduler(models, engine)
    app = create_app(Settings(models=tmp_path / "models"), scheduler=scheduler, models=models, store=None)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield FakeServer(server, client, models, scheduler, engine)
