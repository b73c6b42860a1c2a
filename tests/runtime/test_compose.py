"""build_runtime, the one composition root: what it builds from settings, and serving a library later."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.config.settings import Settings
from corral.runtime.compose import build_runtime
from corral.runtime.scheduler import Scheduler, SchedulerSettings
from corral.sources.catalog import Catalog
from corral.store.errors import ModelNotFoundError
from tests.ggufs import write_tiny_llama
from tests.specs import cpu_options


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = tmp_path / "library"
    root.mkdir()
    write_tiny_llama(tmp_path / "tiny.gguf")
    (root / "alpha.Modelfile").write_text("FROM ../tiny.gguf\nSYSTEM one\n")
    return root


def test_the_settings_choose_the_store_and_the_scheduler(tmp_path: Path):
    settings = Settings(models=tmp_path / "models", keep_alive="1m", max_loaded_models=2, max_queue=7)
    runtime = build_runtime(settings, options=cpu_options())
    assert runtime.store.root == tmp_path / "models" and runtime.library is None
    assert isinstance(runtime.models, Catalog) and runtime.scheduler.source is runtime.models
    assert runtime.scheduler.settings == SchedulerSettings(keep_alive=60.0, max_loaded_models=2, max_queue=7)
    assert build_runtime(settings, options=cpu_options(), keep_alive=-1.0).scheduler.settings.keep_alive == -1.0


def test_a_library_in_the_settings_is_compiled_before_the_first_request(tmp_path: Path, library: Path):
    settings = Settings(models=tmp_path / "models", library=library)
    runtime = build_runtime(settings, options=cpu_options())
    assert runtime.library is not None and runtime.models.spec("alpha").system == "one"
    left_out = build_runtime(settings, options=cpu_options(), serve_library=False)  # corral run
    assert left_out.library is None
    with pytest.raises(ModelNotFoundError):
        left_out.models.spec("alpha")


def test_a_library_served_later_goes_in_front_of_the_same_catalog(tmp_path: Path, library: Path):
    runtime = build_runtime(Settings(models=tmp_path / "models"), options=cpu_options())
    catalog, scheduler = runtime.models, runtime.scheduler
    served = runtime.serve_library(library)
    assert runtime.library is served and runtime.serve_library(tmp_path) is served  # once only
    served.sync()
    assert runtime.models is catalog and scheduler.source is catalog  # nothing rewired
    assert catalog.spec("alpha").system == "one"


def test_parts_given_are_used_as_they_are(tmp_path: Path):
    runtime = build_runtime(Settings(models=tmp_path / "models"), options=cpu_options())
    again = build_runtime(runtime.settings, store=runtime.store, models=runtime.models,
                          scheduler=runtime.scheduler)
    assert (again.store, again.models, again.scheduler) == (runtime.store, runtime.models, runtime.scheduler)
    own = Scheduler(runtime.models)
    assert build_runtime(runtime.settings, models=runtime.models, scheduler=own).scheduler is own


def test_a_server_can_be_given_a_whole_runtime(tmp_path: Path):
    from corral.server.app import create_app

    runtime = build_runtime(Settings(models=tmp_path / "models"), options=cpu_options())
    ctx = create_app(runtime.settings, runtime=runtime, name="corral_given_runtime").ctx
    assert ctx.runtime is runtime and (ctx.scheduler, ctx.models, ctx.store) == (
        runtime.scheduler, runtime.models, runtime.store)
