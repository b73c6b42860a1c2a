"""The composition root: `build_runtime(settings)` wires the store, the models and the scheduler.

The server calls it when it starts, `corral run` without a server calls it for its own process,
and nothing else builds these parts, so both run models the same way. What a caller passes in
(tests inject a scheduler or a model source) is used as given; the rest is built from the settings.

The models are a `Catalog`: the store's models, and the library's definitions in front of them
when a library folder is served. A server started without one can be given one later
(`corral apply`): `Runtime.serve_library` sets it on the same catalog the scheduler already reads,
so nothing is rewired.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from corral.compiler.compile import CompileOptions
from corral.compiler.spec import RuntimeSpec
from corral.config.settings import Settings
from corral.sources.catalog import Catalog
from corral.sources.library import Library
from corral.sources.stored import ModelListing, ShowInfo
from corral.runtime.scheduler import EngineFactory, EngineLike, ModelSource, Scheduler, SchedulerSettings
from corral.store.store import Store


class ModelCatalog(ModelSource, Protocol):
    """What the APIs ask of the models: a Catalog, or a test's stand-in."""

    def list(self) -> list[ModelListing]: ...
    def show(self, name: str, *, verbose: bool = False) -> ShowInfo: ...
    def digest_of(self, spec: RuntimeSpec) -> str: ...


@dataclass
class Runtime:
    """Everything that runs models, built once per process."""

    settings: Settings
    store: Store
    models: ModelCatalog
    scheduler: Scheduler
    library: Library | None = None  # the library folder served, if any

    def serve_library(self, root: Path) -> Library:
        """The library served, made over `root` when there is none yet (`corral apply` on a
        server started without a library). Its models then come before the store's."""
        if self.library is not None:
            return self.library
        if not isinstance(self.models, Catalog):
            raise TypeError("only a runtime whose models are a Catalog can serve a library")
        self.library = make_library(self.settings, self.store, self.models.options, root)
        self.models.library = self.library
        return self.library

    async def close(self) -> None:
        """Cancel the library's background pulls, and unload every model."""
        if self.library is not None:
            import asyncio

            await asyncio.to_thread(self.library.close)
        await self.scheduler.close()


def machine_options() -> CompileOptions:
    """The machine's readings now: the GPU inventory from NVML (empty, with the reason, when there
    is none) and available memory. Callers take them once; every compile after sees the same."""
    from corral.machine.gpus import NvmlProbe
    from corral.machine.memory import available_memory

    return CompileOptions(inventory=NvmlProbe().read(), memory_bytes=available_memory())


def compile_options(settings: Settings, machine: CompileOptions | None = None) -> CompileOptions:
    """The machine's readings (`machine`, else read now) with the settings' slot count."""
    return dataclasses.replace(machine or machine_options(), num_parallel=settings.num_parallel)


def make_library(settings: Settings, store: Store, options: CompileOptions, root: Path) -> Library:
    """A library over `root` whose missing registry bases are pulled into `store` in the background,
    with the registry settings (CORRAL_REGISTRY, HF_ENDPOINT, HF_TOKEN, the Corral home's credentials)."""
    from corral.registry.access import RegistryAccess
    from corral.sources.bases import Bases
    from corral.store.create import StoreResolver

    bases = Bases(store, access=RegistryAccess.from_settings(settings))
    return Library(root, options, StoreResolver(store), bases)


def engine_factory(settings: Settings) -> EngineFactory:
    """Engines whose workers run as the settings say (CORRAL_OMP_WAIT_POLICY, CORRAL_CPU_REPACK,
    CORRAL_WORKER_STALL_TIMEOUT, CORRAL_PREFIX_CACHE)."""
    def engine(spec: RuntimeSpec) -> EngineLike:
        from corral.engine.process import Engine  # the worker machinery loads only when a model does

        return Engine(spec, omp_wait_policy=settings.omp_wait_policy, cpu_repack=settings.cpu_repack,
                      stall_timeout=settings.worker_stall_timeout,
                      prefix_cache=settings.prefix_cache == "on")
    return engine


def build_runtime(settings: Settings, *, store: Store | None = None, models: ModelCatalog | None = None,
                  scheduler: Scheduler | None = None, options: CompileOptions | None = None,
                  serve_library: bool = True, keep_alive: float | None = None) -> Runtime:
    """Build what `settings` asks for, around the parts given.

    `serve_library=False` leaves CORRAL_LIBRARY out (`corral run` runs the store's models);
    `keep_alive` overrides the settings' default keep-alive (seconds, negative: forever).
    A library is compiled once here, before the first request.
    """
    library = None
    if store is None:
        store = Store(settings.models)
    if models is None:
        from corral.sources.stored import Models

        options = options or compile_options(settings)
        catalog = Catalog(Models(store, options))
        if serve_library and settings.library is not None:
            library = make_library(settings, store, options, settings.library)
            library.sync()
            catalog.library = library
        models = catalog
    if scheduler is None:
        scheduler = Scheduler(models, SchedulerSettings(
            keep_alive=settings.keep_alive_seconds if keep_alive is None else keep_alive,
            max_loaded_models=settings.max_loaded_models, max_queue=settings.max_queue,
            gpus=len(options.inventory.devices) if options is not None else 0),
            engine_factory=engine_factory(settings))
    return Runtime(settings, store, models, scheduler, library)
