"""The Sanic application: `create_app(settings)` builds it, `serve(settings)` runs it.

State lives on `app.ctx` (an `AppContext`), never in module globals. The store, the model source
and the scheduler can be passed in (tests inject fakes); what is not passed in is built from the
settings in a before_server_start listener, so importing or creating the app loads nothing heavy.
The scheduler, and with it every loaded model, is closed after the server stops.

Routes: `GET|HEAD /` (liveness text; Ollama's clients only check for 200), the native API
blueprint under /api (ollama_api.py, models_api.py) and the OpenAI one under /v1 (openai_api.py).
Each blueprint renders its own errors; an unknown route gets the error shape its path implies.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sanic import Request, Sanic
from sanic.response import HTTPResponse, empty, text

from corral.server import ollama_api, openai_api
from corral.server.errors import render_any
from corral.config.settings import Settings

log = logging.getLogger(__name__)

ROOT_TEXT = "Corral is running"

# A queued request may wait for a model to load, and a non-streamed answer for all of its tokens:
# Sanic's 60-second default would cut both off.
RESPONSE_TIMEOUT_SECONDS = 24 * 3600


@dataclass
class AppContext:
    """What every handler reaches through `request.app.ctx`."""

    settings: Settings
    scheduler: Any = None  # corral.runtime.scheduler.Scheduler, or a test double
    models: Any = None  # corral.sources.stored.Models (the ModelSource)
    store: Any = None  # corral.store.store.Store
    library: Any = None  # corral.sources.library.Library when a library folder is served
    watch_task: Any = None  # the library watcher (asyncio.Task)
    watch_stop: Any = None  # asyncio.Event that ends it
    origin_patterns: tuple[re.Pattern[str], ...] = field(default=())


def create_app(settings: Settings, *, scheduler: Any = None, models: Any = None, store: Any = None,
               name: str = "corral") -> Sanic:
    """Build the server. Dependencies left out are built from `settings` when the server starts."""
    ctx = AppContext(settings=settings, scheduler=scheduler, models=models, store=store,
                     origin_patterns=tuple(_origin_pattern(o) for o in settings.allowed_origins))
    app = Sanic(name, ctx=ctx, configure_logging=False)
    app.config.RESPONSE_TIMEOUT = RESPONSE_TIMEOUT_SECONDS
    app.config.NOISY_EXCEPTIONS = False
    app.config.FALLBACK_ERROR_FORMAT = "json"

    app.add_route(root, "/", methods=["GET", "HEAD"])
    app.blueprint(ollama_api.blueprint())
    app.blueprint(openai_api.blueprint())
    app.exception(Exception)(render_any)

    app.register_listener(_start, "before_server_start")
    app.register_listener(_stop, "after_server_stop")
    app.register_middleware(_preflight, "request")
    app.register_middleware(_cors, "response")
    return app


def serve(settings: Settings) -> None:
    """Run the server in this process until it is interrupted (`corral serve`)."""
    app = create_app(settings)
    host, port = settings.bind
    log.info("Corral listening on %s:%d, models in %s", host, port, settings.models)
    app.run(host=host, port=port, single_process=True, access_log=False, motd=False)


async def root(request: Request) -> HTTPResponse:
    return text(ROOT_TEXT)


def build_defaults(ctx: AppContext) -> None:
    """Fill in the store, model source and scheduler the caller did not provide."""
    settings = ctx.settings
    if ctx.store is None:
        from corral.store.store import Store

        ctx.store = Store(settings.models)
    if ctx.models is None:
        from corral.compiler.compile import CompileOptions
        from corral.machine.gpus import NvmlProbe
        from corral.machine.memory import available_memory
        from corral.sources.stored import Models

        # The machine is read once, here: every compile after this sees the same readings.
        options = CompileOptions(inventory=NvmlProbe().read(), memory_bytes=available_memory(),
                                 num_parallel=settings.num_parallel)
        ctx.models = Models(ctx.store, options)
        if settings.library is not None:
            from corral.sources.catalog import Catalog
            from corral.store.create import StoreResolver
            from corral.sources.library import Library

            ctx.library = Library(settings.library, options, StoreResolver(ctx.store))
            ctx.library.sync()  # compile everything once before the first request
            ctx.models = Catalog(ctx.models, ctx.library)
    if ctx.scheduler is None:
        from corral.runtime.scheduler import Scheduler, SchedulerSettings

        ctx.scheduler = Scheduler(ctx.models, SchedulerSettings(
            keep_alive=settings.keep_alive_seconds, max_loaded_models=settings.max_loaded_models,
            max_queue=settings.max_queue))


async def _start(app: Sanic) -> None:
    build_defaults(app.ctx)
    await start_watch(app)


async def start_watch(app: Sanic) -> None:
    """(Re)start the library watcher; nothing to do when no library is served."""
    import asyncio

    from corral.server.library_watch import watch

    ctx = app.ctx
    await stop_watch(app)
    if ctx.library is None:
        return
    ctx.watch_stop = asyncio.Event()
    ctx.watch_task = asyncio.ensure_future(watch(ctx.library, ctx.scheduler, ctx.watch_stop))


async def stop_watch(app: Sanic) -> None:
    ctx = app.ctx
    if ctx.watch_task is not None:
        ctx.watch_stop.set()
        try:
            await ctx.watch_task
        except Exception:
            log.exception("library watcher ended with an error")
        ctx.watch_task = None


async def _stop(app: Sanic) -> None:
    await stop_watch(app)
    if app.ctx.scheduler is not None:
        await app.ctx.scheduler.close()


# -- CORS ----------------------------------------------------------------------------------------

_CORS_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, "
                                    "OpenAI-Beta, x-stainless-arch, x-stainless-async, x-stainless-lang, "
                                    "x-stainless-os, x-stainless-package-version, x-stainless-retry-count, "
                                    "x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout",
    "Access-Control-Max-Age": "43200",
}


@lru_cache(maxsize=64)
def _origin_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")) + r"\Z")


def allowed_origin(ctx: AppContext, origin: str) -> bool:
    """Whether a browser page from `origin` may call the API (CORRAL_ORIGINS plus the defaults)."""
    return any(p.match(origin) for p in ctx.origin_patterns)


def _cors_headers(request: Request) -> dict[str, str]:
    origin = request.headers.get("origin")
    if not origin or not allowed_origin(request.app.ctx, origin):
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin", **_CORS_HEADERS}


async def _preflight(request: Request) -> HTTPResponse | None:
    if request.method == "OPTIONS":
        return empty(status=204, headers=_cors_headers(request))
    return None


async def _cors(request: Request, response: HTTPResponse) -> None:
    for key, value in _cors_headers(request).items():
        response.headers.setdefault(key, value)
