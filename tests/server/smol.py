"""SmolLM2 served for the end-to-end tests: a store holding it as `smol` (num_ctx 2048, so every
slot stays small), and a live server over such a store."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from corral.config.settings import Settings
from corral.dsl import parse_modelfile
from corral.server.app import create_app
from corral.store.create import create_model
from corral.store.store import Store
from tests.server.live import LiveServer
from tests.specs import cpu_options

MODEL = "smol"


def smol_store(root: Path, gguf: Path, num_parallel: int = 4) -> Path:
    """`root`/models, holding SmolLM2 as `smol` with num_ctx 2048."""
    definition = parse_modelfile(f"FROM {gguf}\nPARAMETER num_ctx 2048\n", str(root / "Modelfile")).definition
    create_model(Store(root / "models"), MODEL, definition, base_dir=root, options=cpu_options(num_parallel=num_parallel))
    return root / "models"


@contextmanager
def serving_smol(root: Path, gguf: Path, name: str, num_parallel: int = 1, **settings: Any) -> Iterator[LiveServer]:
    """A real server (the app `name`) over a fresh `smol_store` in `root`, with `num_parallel` slots."""
    models = smol_store(root, gguf, num_parallel)
    with LiveServer(create_app(Settings(models=models, num_parallel=num_parallel, **settings), name=name)) as live:
        yield live
