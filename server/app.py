"""The Sanic application: `create_app(settings)` builds it, `serve(settings)` runs it.

State lives on `app.ctx` (an `AppContext`), never in module globals. The models run through a
`Runtime` (corral.runtime.compose): `create_app` takes a whole one (`runtime=`) or some of its
parts (`scheduler=`, `models=`, `store=`; tests inject them), and `build_runtime` builds the rest
from the settings in a before_server_start listener, so importing or creating the app loads nothing
heavy. The scheduler, and with it every loaded model, is closed after the server stops.

Routes: `GET|HEAD /` (liveness text; Ollama's clients only check for 200), the native API
blueprint under /api (ollama_api.py, models_api.py) and the OpenAI one under /v1 (openai_api.py).
Each blueprint renders its own errors; an unknown route gets the error shape its path implies.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache

from sanic import Request, Sanic
from sanic.response import HTTPResponse, empty, text

from corral.config.settings import Settings
from corral.runtime.compose import ModelCatalog, Runtime
from corral.runtime.scheduler import Scheduler
from corral.server import guard, hosts, limits, metrics, ollama_api, openai_api
from corral.server.errors import render_any
from corral.sources.library import Library
from corral.store.store import Store

log = logging.getLogger(__name__)

ROOT_TEXT = "Corral is running"

# A queued request may wait for a model to load, and a non-streamed answer for all of its tokens:
# Sanic's 60-second default would cut both off.
RESPONSE_TIMEOUT_SECONDS = 24 * 3600


@dataclass
class Given:
    """The parts of the runtime `create_app` was given; the rest is built at start."""

    store: Store | None = None
    models: ModelCatalog | None = None
    scheduler: Scheduler | None = None


@dataclass
class AppContext:
    """What every handler reaches through `request.app.ctx`."""

    settings: Settings
    given: Given = field(default_factory=Given)
    built: Runtime | None = None  # set when the server starts (or by create_app's `runtime=`)
    watch_task: asyncio.Task[None] | None = None  # the library watcher
    watch_stop: asyncio.Event | None = None  # set to end it
    origin_patterns: tuple[re.Pattern[str], ...] = field(default=())
    metrics: "metrics.Metrics | None" = None  # this app's registry (server/metrics.py)

    @property
    def runtime(self) -> Runtime:
        if self.built is None:
            raise RuntimeError("the server has not started: its runtime is built when it starts")
        return self.built

    @property
    def scheduler(self) -> Scheduler:
        return self.runtime.scheduler

    @property
    def models(self) -> ModelCatalog:
        return self.runtime.models

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def library(self) -> Library | None:
        return self.runtime.library


def create_app(settings: Settings, *, runtime: Runtime | None = None, scheduler: Scheduler | None = None,
               models: ModelCatalog | None = None, store: Store | None = None, name: str = "corral") -> Sanic:
    """Build the server over `runtime`, or over one `build_runtime` makes at start from `settings`
    and the parts given."""
    ctx = AppContext(settings=settings, given=Given(store, models, scheduler), built=runtime,
                     origin_patterns=tuple(_origin_pattern(o) for o in settings.allowed_origins))
    app = Sanic(name, ctx=ctx, configure_logging=False)
    app.config.RESPONSE_TIMEOUT = RESPONSE_TIMEOUT_SECONDS
    app.config.NOISY_EXCEPTIONS = False
    app.config.FALLBACK_ERROR_FORMAT = "json"
    limits.configure(app, settings)

    app.add_route(root, "/", methods=["GET", "HEAD"])
    app.blueprint(ollama_api.blueprint())
    app.blueprint(openai_api.blueprint())
    app.exception(Exception)(render_any)

    app.register_listener(_start, "before_server_start")
    app.register_listener(_stop, "after_server_stop")
    metrics.install(app)  # after _start, whose scheduler it meters; before the guard, so refusals count
    hosts.register(app)  # first: a refused Host or Origin reaches nothing else
    app.register_middleware(_preflight, "request")
    guard.install(app)  # API keys, scopes and rate limits (server/guard.py)
    app.register_middleware(_cors, "response")
    return app


def serve(settings: Settings) -> None:
    """Run the server in this process until it is interrupted (`corral serve`)."""
    options = guard.listen_options(settings)  # the bind policy and TLS, before anything starts
    app = create_app(settings)
    host, port = settings.bind
    log.info("Corral listening on %s:%d, models in %s", host, port, settings.models)
    app.run(host=host, port=port, single_process=True, access_log=False, motd=False, **options)


async def root(request: Request) -> HTTPResponse:
    return text(ROOT_TEXT)


async def _start(app: Sanic) -> None:
    ctx: AppContext = app.ctx
    if ctx.built is None:
        from corral.runtime.compose import build_runtime

        given = ctx.given
        ctx.built = build_runtime(ctx.settings, store=given.store, models=given.models,
                                  scheduler=given.scheduler)
    await start_watch(app)


async def start_watch(app: Sanic) -> None:
    """(Re)start the library watcher; nothing to do when no library is served."""
    from corral.server.library_watch import watch

    ctx: AppContext = app.ctx
    await stop_watch(app)
    library = ctx.library
    if library is None:
        return
    ctx.watch_stop = asyncio.Event()
    ctx.watch_task = asyncio.ensure_future(watch(library, ctx.scheduler, ctx.watch_stop,
                                                 observe=ctx.metrics.library_synced if ctx.metrics else None))


async def stop_watch(app: Sanic) -> None:
    ctx: AppContext = app.ctx
    if ctx.watch_task is not None:
        if ctx.watch_stop is not None:
            ctx.watch_stop.set()
        try:
            await ctx.watch_task
        except Exception:
            log.exception("library watcher ended with an error")
        ctx.watch_task = None


async def _stop(app: Sanic) -> None:
    await stop_watch(app)
    if app.ctx.built is not None:
        await app.ctx.built.close()


# -- CORS ----------------------------------------------------------------------------------------

_CORS_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, "
                                    "OpenAI-Beta, x-api-key, anthropic-version, anthropic-beta, "
                                    "anthropic-dangerous-direct-browser-access, "
                                    "x-stainless-arch, x-stainless-async, x-stainless-lang, "
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
