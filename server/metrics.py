"""`GET /metrics`: Prometheus text over one registry per app (several apps share a test process).

Three sources, each counted where it is cheapest:

- the HTTP middleware counts requests by matched route pattern (never the raw URL) and status;
- a metering wrapper around every engine the scheduler makes observes each generation's time to
  first token, its latency and its token counts, per model and per API key (`request.ctx.key_name`,
  set by the guard; "" without one), from a context variable the request middleware sets;
- a Collector reads the scheduler's state at scrape time (loaded models, slots, queue, KV cache,
  memory, GPU layers, load time, crashes), so nothing is updated on every decode step.

Besides the corral_* names, the Gateway API Inference Extension's model-server protocol metrics
(queued and running requests, KV-cache utilization, LoRA info) are exposed as one series each for
the whole server, which is what its endpoint picker reads per replica (README "Metrics").
"""

from __future__ import annotations

import contextvars
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from sanic import Request, Sanic
from sanic.response import HTTPResponse, raw

from corral.compiler.spec import RuntimeSpec
from corral.engine.requests import Chunk, Final
from corral.runtime.scheduler import EngineFactory, EngineLike, RunningModel, Scheduler

log = logging.getLogger(__name__)

# prometheus_client adds a `_created` gauge beside every counter and histogram by default: a second
# series per label set that no dashboard or endpoint picker reads. A library-wide switch, set once.
disable_created_metrics()

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
UNMATCHED = "unmatched"  # the route label of a request no route matched (a 404): one series, not one per URL

# The request being served, for the engine wrapper: set by the request middleware in the handler's
# task, which is where a generation's stream is iterated.
_current: contextvars.ContextVar[Request | None] = contextvars.ContextVar("corral_metrics_request", default=None)


def route_label(request: Request) -> str:
    """The matched route's pattern (`/api/blobs/<digest:str>`), or `unmatched`."""
    route = request.route
    if route is None:
        return UNMATCHED
    return "/" + route.path.lstrip("/")


def key_name(request: Request | None) -> str:
    """The API key's name the guard put on the request, "" when there is none."""
    if request is None:
        return ""
    return str(getattr(request.ctx, "key_name", "") or "")


@dataclass
class Metrics:
    """One app's registry and the instruments its middleware and engine wrapper update."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    scheduler: Callable[[], Scheduler | None] = lambda: None
    library_reloads: int = 0
    library_reload_errors: int = 0
    lora_changed: float = field(default_factory=time.time)
    _lora_seen: tuple[str, str] = ("", "")

    def __post_init__(self) -> None:
        r = self.registry
        self.http_requests = Counter("corral_http_requests", "HTTP requests answered, by matched route pattern, "
                                     "method and status", ["route", "method", "status"], registry=r)
        self.prompt_tokens = Counter("corral_prompt_tokens", "Prompt tokens evaluated (embedding inputs too), "
                                     "per model and API key",
                                     ["model", "key"], registry=r)
        self.generation_tokens = Counter("corral_generation_tokens", "Tokens generated, per model and API key",
                                         ["model", "key"], registry=r)
        self.generations = Counter("corral_generations", "Generations finished, per model and done reason",
                                   ["model", "reason"], registry=r)
        self.ttft = Histogram("corral_time_to_first_token_seconds", "Time from a request's arrival to its "
                              "first generated token, per model", ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.latency = Histogram("corral_request_duration_seconds", "Time from a generation request's arrival "
                                 "to its last token, per model", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        r.register(_StateCollector(self))

    # -- the library watcher --------------------------------------------------------------------

    def library_synced(self, errors: int) -> None:
        """One reconcile of the library ran; `errors` definitions (or the sync itself) failed."""
        self.library_reloads += 1
        self.library_reload_errors += errors

    # -- engines ----------------------------------------------------------------------------------

    def metered(self, factory: EngineFactory) -> EngineFactory:
        """The scheduler's engine factory, with every engine it makes observed by these metrics."""
        if getattr(factory, "metrics", None) is self:
            return factory

        def make(spec: RuntimeSpec) -> EngineLike:
            return MeteredEngine(factory(spec), self)
        make.metrics = self  # type: ignore[attr-defined]
        return make

    def observe_final(self, model: str, request: Request | None, final: Final, first_at: float | None) -> None:
        key = key_name(request)
        self.prompt_tokens.labels(model, key).inc(final.prompt_eval_count)
        self.generation_tokens.labels(model, key).inc(final.eval_count)
        self.generations.labels(model, final.done_reason).inc()
        started = getattr(request.ctx, "metrics_started", None) if request is not None else None
        if started is not None:
            now = time.perf_counter()
            self.latency.labels(model).observe(now - started)
            if first_at is not None:
                self.ttft.labels(model).observe(first_at - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MeteredEngine:
    """An engine whose generations are observed; everything else goes to the engine as it is."""

    def __init__(self, engine: EngineLike, metrics: Metrics) -> None:
        self._engine = engine
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    @property
    def inner(self) -> EngineLike:
        return self._engine

    async def start(self) -> None:
        await self._engine.start()

    async def close(self) -> None:
        await self._engine.close()

    async def embed(self, req: Any) -> Any:
        result = await self._engine.embed(req)  # type: ignore[attr-defined]
        self._metrics.prompt_tokens.labels(self._engine.spec.name, key_name(_current.get())).inc(
            result.prompt_eval_count)
        return result

    async def generate(self, req: Any) -> AsyncIterator[Any]:
        request = _current.get()
        first_at: float | None = None
        model = self._engine.spec.name
        stream = self._engine.generate(req)  # type: ignore[attr-defined]
        try:
            async for item in stream:
                if first_at is None and isinstance(item, Chunk):
                    first_at = time.perf_counter()
                elif isinstance(item, Final):
                    self._metrics.observe_final(model, request, item, first_at)
                yield item
        finally:
            await stream.aclose()


# -- the scrape-time collector --------------------------------------------------------------------


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _engine(model: RunningModel) -> Any:
    engine = model.engine
    return engine.inner if isinstance(engine, MeteredEngine) else engine


def kv_usage(model: RunningModel) -> tuple[int, int]:
    """(KV cells held by running requests, KV cells) of one loaded model: the worker's last report
    (the engine's `pool_stats`, a batching.PoolStats) when it has one, else none used of the plan's."""
    report = getattr(_engine(model), "pool_stats", None)
    total = model.spec.plan.n_ctx
    if report is None:
        return 0, total
    cells = int(getattr(report, "pool_cells", 0)) or total
    return min(int(getattr(report, "used_cells", 0)), cells), cells


def slots(model: RunningModel) -> int:
    """Sequences the model's worker runs at once (the engine's, else the spec's num_parallel)."""
    n = getattr(_engine(model), "n_slots", None)
    return n if isinstance(n, int) and n > 0 else max(1, model.spec.load.num_parallel)


def resident_bytes(model: RunningModel) -> int | None:
    """The worker process's resident memory, None when it has none (a scripted engine, a dead worker)."""
    pid = getattr(_engine(model), "pid", None)
    if not isinstance(pid, int):
        return None
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:  # gone between the check and the read
        return None


class _StateCollector(Collector):
    """Gauges read from the scheduler at scrape time (see the module docstring)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time: the registry must not call collect() to learn the names

    def collect(self) -> Iterable[Metric]:
        m = self.metrics
        scheduler = m.scheduler()
        running = scheduler.running() if scheduler is not None else []
        waiting_load = scheduler.waiting if scheduler is not None else 0

        reloads = CounterMetricFamily("corral_library_reloads", "Reconciles of the library folder (each "
                                      "batch of file changes, each pulled base, each apply)")
        reloads.add_metric([], m.library_reloads)
        errors = CounterMetricFamily("corral_library_reload_errors", "Definitions that failed to compile in "
                                     "a reconcile, and reconciles that failed")
        errors.add_metric([], m.library_reload_errors)
        crashes = CounterMetricFamily("corral_worker_crashes", "Model worker processes that died or hung "
                                      "since the server started")
        crashes.add_metric([], getattr(scheduler, "worker_crashes", 0) if scheduler is not None else 0)
        yield from (reloads, errors, crashes)

        per = {name: _gauge(name, doc, ["model"]) for name, doc in (
            ("corral_model_requests_running", "Requests of the model being generated, one per busy slot"),
            ("corral_model_requests_waiting", "Requests of the model waiting for a free slot"),
            ("corral_model_slots", "Sequence slots of the model's context (requests at once)"),
            ("corral_model_slot_usage_ratio", "Busy slots over slots, 0 to 1"),
            ("corral_model_kv_cache_usage_ratio", "KV cells held by running requests over the KV cells, 0 to 1"),
            ("corral_model_kv_cache_cells", "KV cells the model's context holds"),
            ("corral_model_load_seconds", "How long the model's current worker took to load"),
            ("corral_model_gpu_layers", "Layers offloaded to GPU (llama.cpp's n_gpu_layers)"),
            ("corral_model_layers", "Layers of the model, the output head counted as one"),
        )}
        loaded = _gauge("corral_model_loaded", "1 per loaded model, with its digest and where it runs",
                        ["model", "digest", "processor"])
        planned = _gauge("corral_model_memory_planned_bytes", "Memory the plan gives the model, per device "
                         "(cpu, gpu0, gpu1 ...)", ["model", "device"])
        actual = _gauge("corral_model_memory_resident_bytes", "Resident memory of the model's worker process",
                        ["model"])
        total_running = total_waiting = kv_used = kv_cells = 0
        for r in running:
            n = slots(r)
            busy = min(r.in_flight, n)
            queued = max(0, r.in_flight - n)
            used, cells = kv_usage(r)
            plan = r.spec.plan
            total_running += busy
            total_waiting += queued
            kv_used += used
            kv_cells += cells
            for name, value in (("corral_model_requests_running", busy), ("corral_model_requests_waiting", queued),
                                ("corral_model_slots", n), ("corral_model_slot_usage_ratio", busy / n),
                                ("corral_model_kv_cache_usage_ratio", used / cells if cells else 0.0),
                                ("corral_model_kv_cache_cells", cells),
                                ("corral_model_load_seconds", r.load_duration_ns / 1e9),
                                ("corral_model_gpu_layers", plan.n_gpu_layers),
                                ("corral_model_layers", plan.layer_count)):
                per[name].add_metric([r.name], value)
            loaded.add_metric([r.name, r.digest, processor(plan.backend, plan.n_gpu_layers, plan.layer_count)], 1)
            planned.add_metric([r.name, "cpu"], plan.cpu_bytes)
            for d in plan.devices:
                planned.add_metric([r.name, f"gpu{d.index}"], d.total_bytes)
            rss = resident_bytes(r)
            if rss is not None:
                actual.add_metric([r.name], rss)
        yield from per.values()
        yield from (loaded, planned, actual)

        waiting = _gauge("corral_num_requests_waiting", "Requests waiting: for a free slot, or for their "
                         "model to load (Gateway API Inference Extension: TotalQueuedRequests)")
        waiting.add_metric([], total_waiting + waiting_load)
        active = _gauge("corral_num_requests_running", "Requests being generated on this server "
                        "(Gateway API Inference Extension: TotalRunningRequests)")
        active.add_metric([], total_running)
        kv = _gauge("corral_kv_cache_usage_perc", "KV cells held by running requests over all loaded models' "
                    "KV cells, 0 to 1 (Gateway API Inference Extension: KVCacheUtilization)")
        kv.add_metric([], kv_used / kv_cells if kv_cells else 0.0)
        yield from (waiting, active, kv)
        yield self._lora(running, scheduler)

    def _lora(self, running: list[RunningModel], scheduler: Scheduler | None) -> Metric:
        """The LoRA info metric: loaded models that carry adapters are the running adapters; its value
        is when the lists last changed, as the endpoint picker expects."""
        m = self.metrics
        adapters = ",".join(sorted(r.name for r in running if r.spec.adapters))
        waiting = ",".join(sorted(scheduler.loading())) if scheduler is not None else ""
        if (adapters, waiting) != m._lora_seen:
            m._lora_seen, m.lora_changed = (adapters, waiting), time.time()
        max_lora = scheduler.settings.max_loaded_models if scheduler is not None else 0
        info = _gauge("corral_lora_requests_info", "Models with LoRA adapters loaded and waiting to load; "
                      "the value is when these lists last changed (Unix seconds)",
                      ["running_lora_adapters", "waiting_lora_adapters", "max_lora"])
        info.add_metric([adapters, waiting, str(max_lora)], m.lora_changed)
        return info


def processor(backend: str, gpu_layers: int, layers: int) -> str:
    """`cpu`, `gpu`, or `cpu+gpu` for a model split between them."""
    if backend == "cpu" or gpu_layers <= 0:
        return "cpu"
    return "gpu" if gpu_layers >= layers else "cpu+gpu"


# -- the app's part ---------------------------------------------------------------------------------


def install(app: Sanic) -> Metrics:
    """Give `app` its own registry, the /metrics route and the middleware that count requests.

    Call after the app's own before_server_start listener: the engine wrapper goes onto the
    scheduler that listener builds."""
    metrics = Metrics(scheduler=lambda: app.ctx.built.scheduler if app.ctx.built is not None else None)
    app.ctx.metrics = metrics
    app.add_route(serve_metrics, "/metrics", methods=["GET"], name="metrics")
    app.register_middleware(_arrived, "request")
    app.register_middleware(_answered, "response")
    app.register_listener(_wrap_engines, "before_server_start")
    return metrics


async def serve_metrics(request: Request) -> HTTPResponse:
    return raw(request.app.ctx.metrics.render(), content_type=CONTENT_TYPE_LATEST)


async def _wrap_engines(app: Sanic) -> None:
    scheduler = app.ctx.scheduler
    scheduler.factory = app.ctx.metrics.metered(scheduler.factory)


async def _arrived(request: Request) -> None:
    request.ctx.metrics_started = time.perf_counter()
    _current.set(request)


async def _answered(request: Request, response: HTTPResponse) -> None:
    metrics: Metrics | None = getattr(request.app.ctx, "metrics", None)
    if metrics is None or getattr(request.ctx, "metrics_counted", False):
        return
    request.ctx.metrics_counted = True
    metrics.http_requests.labels(route_label(request), request.method, str(response.status)).inc()
