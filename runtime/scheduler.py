"""Which models are loaded, for how long, and who waits: load on first use, keep-alive, eviction.

One Runner per loaded model (an Engine: a worker process with N slots). A request holds its
runner while it streams; when the last request leaves, the runner's keep-alive starts (0 unloads
at once, negative keeps it forever). Before a load, idle runners are evicted least recently used
first while the count limit or the memory budget would be exceeded; when nothing idle can go, the
load waits for a runner to become idle. Requests beyond the slots plus `max_queue` get
ServerBusyError (503).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import AsyncIterator, Callable, Protocol

from corral.machine.memory import available_memory
from corral.compiler.spec import RuntimeSpec
from corral.engine.errors import ServerBusyError

log = logging.getLogger(__name__)


class EngineLike(Protocol):
    spec: RuntimeSpec
    load_duration_ns: int

    async def start(self) -> None: ...
    async def close(self) -> None: ...


class ModelSource(Protocol):
    def spec(self, name: str) -> RuntimeSpec:
        """The current spec of `name`; raises ModelNotFoundError."""


EngineFactory = Callable[[RuntimeSpec], EngineLike]


def _default_factory(spec: RuntimeSpec) -> EngineLike:
    from corral.engine.process import Engine  # the worker machinery loads only when needed

    return Engine(spec)


@dataclass(frozen=True)
class SchedulerSettings:
    keep_alive: float = 300.0  # seconds; 0 unloads after each request; negative: forever
    max_loaded_models: int = 3
    max_queue: int = 512
    memory_budget: int | None = None  # bytes for loaded models; None: what the OS has free at start
    gpus: int = 0  # GPUs the machine has: a model planned on the CPU beside them is warned about


VARIANT = "@load:"  # in the key of a model loaded with a request's load-time options


@dataclass
class Runner:
    key: str
    engine: EngineLike
    spec: RuntimeSpec
    load_duration_ns: int = 0
    refs: int = 0
    keep_alive: float = 300.0
    expires: float | None = None  # time.monotonic() deadline, None while in use or kept forever
    last_used: float = field(default_factory=time.monotonic)
    draining: bool = False  # replaced by a newer load; closes when idle
    _timer: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str:
        """The model's name (a variant's key carries its load options' digest after VARIANT)."""
        return self.key.partition(VARIANT)[0]

    @property
    def size(self) -> int:
        return self.spec.plan.total_bytes

    @property
    def size_vram(self) -> int:
        return sum(d.total_bytes for d in self.spec.plan.devices)


@dataclass(frozen=True)
class Lease:
    """What a request holds: the spec it started with (a hot swap never changes it mid-stream)."""

    spec: RuntimeSpec
    engine: EngineLike
    load_duration_ns: int  # 0 unless this request waited for the load


@dataclass(frozen=True)
class RunningModel:
    name: str
    digest: str
    size: int
    size_vram: int
    expires_at: datetime | None  # None: kept loaded until stopped
    spec: RuntimeSpec
    in_flight: int
    engine: EngineLike | None = None  # read by /metrics (slots, KV cache, the worker's memory)
    load_duration_ns: int = 0


def cpu_reason(spec: RuntimeSpec) -> str:
    """Why the memory plan put a model on the CPU: the plan's deciding sentence, which comes last."""
    return spec.plan.reasons[-1] if spec.plan.reasons else "the memory plan chose the CPU"


class Scheduler:
    def __init__(self, source: ModelSource, settings: SchedulerSettings | None = None,
                 engine_factory: EngineFactory = _default_factory):
        self.source = source
        self.settings = settings or SchedulerSettings()
        self.factory = engine_factory
        self.budget = self.settings.memory_budget or available_memory()
        self._runners: dict[str, Runner] = {}
        self._loading: dict[str, asyncio.Task[Runner]] = {}
        self._changed = asyncio.Condition()
        self._waiting = 0
        self._closed = False
        self._crashes_closed = 0  # worker crashes of engines already closed

    @property
    def worker_crashes(self) -> int:
        """Model workers that died or hung since the server started (every engine, closed ones too)."""
        return self._crashes_closed + sum(getattr(r.engine, "crashes", 0) for r in self._runners.values())

    # -- public ---------------------------------------------------------------------------------
    @asynccontextmanager
    async def use(self, name: str, keep_alive: float | None = None,
                  spec: RuntimeSpec | None = None, variant: bool = False) -> AsyncIterator[Lease]:
        """Hold the runner of model `name` for one request, loading it if needed.

        `spec`: the model's current spec when the caller has just resolved it (saves a lookup).
        `variant`: `spec` has a request's load options (corral.compiler.variant); it runs as a model
        of its own beside the definition's, under the same eviction rules."""
        if spec is None:
            spec = await asyncio.to_thread(self.source.spec, name)
        key = spec.name + VARIANT + spec.load_digest.removeprefix("sha256:")[:12] if variant else spec.name
        slots = sum(r.spec.plan.sequences for r in self._runners.values() if r.key == key) or spec.plan.sequences
        busy = sum(r.refs for r in self._runners.values() if r.key == key)
        if busy + self._waiting >= slots + self.settings.max_queue:
            raise ServerBusyError("server busy, please try again.  maximum pending requests exceeded",
                                  hint="raise CORRAL_MAX_QUEUE or CORRAL_NUM_PARALLEL")
        self._waiting += 1
        try:
            runner, fresh = await self._acquire(key, spec)
        finally:
            self._waiting -= 1
        runner.refs += 1
        if keep_alive is not None:  # as in Ollama, a request that gives none leaves the runner's as it is
            runner.keep_alive = keep_alive
        self._cancel_timer(runner)
        try:
            yield Lease(runner.spec, runner.engine, runner.load_duration_ns if fresh else 0)
        finally:
            runner.refs -= 1
            runner.last_used = time.monotonic()
            if runner.refs == 0:
                await self._idle(runner)

    async def load(self, name: str, keep_alive: float | None = None) -> int:
        """Load `name` without a request (Ollama's empty prompt); returns the load time in ns."""
        async with self.use(name, keep_alive) as lease:
            return lease.load_duration_ns

    async def unload(self, name: str) -> bool:
        """Unload `name` once its requests finish; False when it was not loaded."""
        try:
            key = (await asyncio.to_thread(self.source.spec, name)).name
        except Exception:
            key = name
        found = [r for r in self._runners.values() if r.name == key]
        for runner in found:
            runner.keep_alive = 0
            if runner.refs == 0:
                await self._close(runner)
        return bool(found)

    def running(self) -> list[RunningModel]:
        now_wall, now = datetime.now(timezone.utc), time.monotonic()
        out = []
        for r in sorted(self._runners.values(), key=lambda r: r.last_used, reverse=True):
            expires = None
            if r.expires is not None:
                expires = now_wall + timedelta(seconds=max(0.0, r.expires - now))
            elif r.keep_alive >= 0 and r.refs > 0:
                expires = now_wall + timedelta(seconds=r.keep_alive)
            out.append(RunningModel(r.name, r.spec.digest, r.size, r.size_vram, expires, r.spec, r.refs,
                                    r.engine, r.load_duration_ns))
        return out

    @property
    def waiting(self) -> int:
        """Requests waiting for their model to load (or for room to load it)."""
        return self._waiting

    def loading(self) -> list[str]:
        """The models being loaded now."""
        return sorted(self._loading)

    async def close(self) -> None:
        self._closed = True
        for runner in list(self._runners.values()):
            await self._close(runner)

    # -- loading and eviction --------------------------------------------------------------------
    async def _acquire(self, key: str, spec: RuntimeSpec) -> tuple[Runner, bool]:
        while True:
            current = self._runners.get(key)
            if current is not None and not current.draining:
                if current.spec.load_digest == spec.load_digest:
                    current.spec = spec  # template, system or sampling changed: swap, no reload
                    return current, False
                current.draining = True  # weights or load settings changed: load beside, drain old
                self._runners[key + "#draining#" + str(id(current))] = self._runners.pop(key)
                if current.refs == 0:
                    await self._close(current)
            task = self._loading.get(key)
            if task is None:
                task = asyncio.ensure_future(self._load(key, spec))
                self._loading[key] = task
                task.add_done_callback(lambda _t, k=key: self._loading.pop(k, None))
                return await asyncio.shield(task), True
            await asyncio.shield(task)

    async def _load(self, key: str, spec: RuntimeSpec) -> Runner:
        await self._make_room(spec)
        engine = self.factory(spec)
        log.info("loading %s (%s)", key, "; ".join(spec.plan.reasons[:1]))
        await engine.start()
        if spec.plan.backend == "cpu" and self.settings.gpus:
            log.warning("%s runs on the CPU although this machine has %d GPU(s): %s", key, self.settings.gpus,
                        cpu_reason(spec))
        runner = Runner(key, engine, spec, engine.load_duration_ns, keep_alive=self.settings.keep_alive)
        self._runners[key] = runner
        return runner

    def _fits(self, spec: RuntimeSpec) -> bool:
        used = sum(r.size for r in self._runners.values())
        count_ok = len(self._runners) < max(1, self.settings.max_loaded_models)
        return count_ok and (used + spec.plan.total_bytes <= self.budget or not self._runners)

    async def _make_room(self, spec: RuntimeSpec) -> None:
        async with self._changed:
            while not self._fits(spec):
                idle = [r for r in self._runners.values() if r.refs == 0]
                if idle:
                    victim = min(idle, key=lambda r: r.last_used)
                    log.info("evicting %s to make room for %s", victim.key, spec.name)
                    await self._close(victim, notify=False)
                    continue
                await self._changed.wait()  # everything loaded is busy: wait for one to go idle

    async def _idle(self, runner: Runner) -> None:
        if runner.draining or runner.keep_alive == 0 or self._closed:
            await self._close(runner)
        elif runner.keep_alive > 0 and math.isfinite(runner.keep_alive):
            runner.expires = time.monotonic() + runner.keep_alive
            loop = asyncio.get_running_loop()
            runner._timer = loop.call_later(runner.keep_alive, lambda: asyncio.ensure_future(self._expire(runner)))
        async with self._changed:
            self._changed.notify_all()

    async def _expire(self, runner: Runner) -> None:
        if runner.refs == 0 and runner.expires is not None and time.monotonic() >= runner.expires - 0.01:
            await self._close(runner)

    def _cancel_timer(self, runner: Runner) -> None:
        if runner._timer is not None:
            runner._timer.cancel()
            runner._timer = None
        runner.expires = None

    async def _close(self, runner: Runner, notify: bool = True) -> None:
        self._cancel_timer(runner)
        for k, r in list(self._runners.items()):
            if r is runner:
                del self._runners[k]
        self._crashes_closed += getattr(runner.engine, "crashes", 0)  # a close is never a crash
        try:
            await runner.engine.close()
        except Exception:  # a dead worker is already gone; nothing to keep
            log.exception("closing %s", runner.key)
        if notify:
            async with self._changed:
                self._changed.notify_all()
