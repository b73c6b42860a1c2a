"""Fixtures of the server tests: a live server over the real runtime with scripted engines.

`fake` (and `serve(**settings)`, for other settings or several servers in one test) runs the real store, model source (compiled from tiny GGUFs) and scheduler; only the
engines are scripted (tests/server/fakes.py). The tests with the real engine and SmolLM2 are in
test_end_to_end.py and test_library_reload.py.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

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


Serve = Callable[..., FakeServer]


@pytest.fixture
def serve(tmp_path, fake_store) -> Iterator[Serve]:
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
            # A name of its own: a test may run several of these servers side by side.
            app = create_app(settings, scheduler=scheduler, models=models, store=store, name=f"fake{count}")
            server = stack.enter_context(LiveServer(app))
            client = stack.enter_context(httpx.Client(base_url=server.url, timeout=30))
            return FakeServer(server, client, settings, store, models, scheduler, engines)

        yield start


@pytest.fixture
def fake(serve) -> FakeServer:
    """A live server with the default settings (listening on loopback), its engines scripted."""
    return serve()
