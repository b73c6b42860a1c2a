"""Fixtures of the server tests: a live server over the real runtime with scripted engines.

`fake` runs the real store, model source (compiled from tiny GGUFs) and scheduler; only the
engines are scripted (tests/server/fakes.py). The tests with the real engine and SmolLM2 are in
test_end_to_end.py and test_library_reload.py.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from sanic import Sanic

from corral.config.settings import Settings
from corral.dsl import parse_modelfile
from corral.runtime.scheduler import Scheduler, SchedulerSettings
from corral.server.app import create_app
from corral.sources.catalog import Catalog
from corral.sources.stored import Models
from corral.store.create import create_model
from corral.store.store import Store
from tests.ggufs import TinyLlama, write_tiny_llama
from tests.server.fakes import ScriptedEngines
from tests.server.live import LiveServer
from tests.specs import CHATML, cpu_options

# Every test builds its own app under the same name; Sanic's registry allows that in test mode.
Sanic.test_mode = True

# A Qwen-like template that renders tools itself.
CHATML_TOOLS = ("{% if tools %}<|im_start|>system\n# Tools\n{% for t in tools %}{{ t.function.name }}\n{% endfor %}"
                "<|im_end|>\n{% endif %}" + CHATML)
CPU = cpu_options(num_parallel=1)
SMOL = "FROM ./smol.gguf\nSYSTEM You are Smol.\nPARAMETER stop <|im_end|>\nLICENSE MIT\n"
TOOLS = "FROM ./tools.gguf\n"


@dataclass
class FakeServer:
    server: LiveServer
    client: httpx.Client
    settings: Settings
    store: Store
    models: Catalog
    scheduler: Scheduler
    engines: ScriptedEngines

    @property
    def url(self) -> str:
        return self.server.url

    def in_flight(self) -> int:
        """Requests holding a model now, read on the server's loop."""
        async def count() -> int:
            return sum(m.in_flight for m in self.scheduler.running())
        return self.server.call(count())


@pytest.fixture(scope="session")
def fake_store(tmp_path_factory) -> Path:
    """A store with `smol` (ChatML, a system prompt, a licence) and `toolsmodel` (its template
    renders tools itself), both tiny random-weight llamas; each test gets its own copy."""
    root = tmp_path_factory.mktemp("fake-store")
    write_tiny_llama(root / "smol.gguf")
    write_tiny_llama(root / "tools.gguf", TinyLlama(chat_template=CHATML_TOOLS, name="Tiny Tools"))
    store = Store(root / "models")
    for name, text in (("smol", SMOL), ("toolsmodel", TOOLS)):
        definition = parse_modelfile(text, str(root / f"{name}.Modelfile")).definition
        create_model(store, name, definition, base_dir=root, options=CPU)
    return store.root


@pytest.fixture
def fake(tmp_path, fake_store) -> Iterator[FakeServer]:
    """A live server over the real store, models and scheduler, whose engines are scripted."""
    settings = Settings(models=tmp_path / "models")
    shutil.copytree(fake_store, settings.models)
    store = Store(settings.models)
    models = Catalog(Models(store, CPU))
    engines = ScriptedEngines()
    scheduler = Scheduler(models, SchedulerSettings(keep_alive=settings.keep_alive_seconds,
                                                    max_loaded_models=settings.max_loaded_models,
                                                    max_queue=settings.max_queue), engine_factory=engines)
    app = create_app(settings, scheduler=scheduler, models=models, store=store)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield FakeServer(server, client, settings, store, models, scheduler, engines)
