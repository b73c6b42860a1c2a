"""The scheduler's rules, with engines that only record what happens to them.

The scheduler is plain logic over specs and engines, so these tests inject both (real-model tests
of loading and serving are in tests/server). Specs are real RuntimeSpecs with plans of chosen size.
"""

from __future__ import annotations

import asyncio

import pytest

from corral.compiler.spec import RuntimeSpec
from corral.engine.errors import ServerBusyError
from corral.runtime.scheduler import Scheduler, SchedulerSettings
from corral.store.errors import ModelNotFoundError
from tests.specs import runtime_spec


def make_spec(name: str, size: int = 100, num_ctx: int = 2048, system: str | None = None,
              slots: int = 1) -> RuntimeSpec:
    return runtime_spec(name=name, size=size, num_ctx=num_ctx, system=system, num_parallel=slots)


class Source:
    def __init__(self, *specs: RuntimeSpec):
        self.specs = {s.name: s for s in specs}

    def spec(self, name: str) -> RuntimeSpec:
        if name not in self.specs:
            raise ModelNotFoundError(name)
        return self.specs[name]


class RecordingEngine:
    """Records ("start", name) and ("close", name); with `gate` set, a load finishes only once the
    test opens the gate. `until(event)` waits for an event to be recorded."""

    events: list[tuple[str, str]] = []
    gate: asyncio.Event | None = None
    _recorded = asyncio.Event()

    def __init__(self, spec: RuntimeSpec):
        self.spec = spec
        self.load_duration_ns = 1000

    @classmethod
    def record(cls, kind: str, name: str) -> None:
        cls.events.append((kind, name))
        cls._recorded.set()
        cls._recorded = asyncio.Event()

    @classmethod
    async def until(cls, event: tuple[str, str]) -> None:
        while event not in cls.events:
            await cls._recorded.wait()

    async def start(self) -> None:
        self.record("start", self.spec.name)
        if self.gate is not None:
            await self.gate.wait()

    async def close(self) -> None:
        self.record("close", self.spec.name)


@pytest.fixture(autouse=True)
def _clear():
    RecordingEngine.events = []
    RecordingEngine.gate = None
    RecordingEngine._recorded = asyncio.Event()


class Observed(Scheduler):
    """Tells the test when a load starts looking for room: from there it runs on until it has
    room or waits for some, before any other task runs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.making_room = asyncio.Event()

    async def _make_room(self, spec: RuntimeSpec) -> None:
        self.making_room.set()
        await super()._make_room(spec)


def scheduler(*specs: RuntimeSpec, **settings) -> Observed:
    return Observed(Source(*specs), SchedulerSettings(**settings), engine_factory=RecordingEngine)


async def request(s: Scheduler, name: str, keep_alive: float | None = None, *, spec: RuntimeSpec | None = None,
                  held: asyncio.Event | None = None, release: asyncio.Event | None = None) -> int:
    """One request for `name`; it sets `held` once it holds the model and lets go when `release` is set."""
    async with s.use(name, keep_alive, spec) as lease:
        if held is not None:
            held.set()
        if release is not None:
            await release.wait()
        return lease.load_duration_ns


def test_loads_on_first_use_and_reuses_after():
    async def main():
        s = scheduler(make_spec("a"))
        first = await request(s, "a")
        second = await request(s, "a")
        assert (first, second) == (1000, 0)
        assert RecordingEngine.events == [("start", "a")]
        assert [m.name for m in s.running()] == ["a"]
        await s.close()
    asyncio.run(main())


def test_concurrent_first_requests_share_one_load():
    async def main():
        spec = make_spec("a")
        s = scheduler(spec)
        RecordingEngine.gate = asyncio.Event()
        # Given the spec (as the APIs give it), each request reaches the scheduler in its first step,
        # so all five are waiting by the time the load starts.
        requests = [asyncio.create_task(request(s, "a", spec=spec)) for _ in range(5)]
        await RecordingEngine.until(("start", "a"))
        RecordingEngine.gate.set()
        assert await asyncio.gather(*requests) == [1000, 0, 0, 0, 0]  # only the first waited for the load
        assert RecordingEngine.events == [("start", "a")]
        await s.close()
    asyncio.run(main())


@pytest.mark.parametrize("keep_alive, loaded_after", [(0, []), (-1, ["a"]), (60, ["a"]), (None, ["a"])])
def test_keep_alive(keep_alive, loaded_after):
    async def main():
        s = scheduler(make_spec("a"))
        await request(s, "a", keep_alive)
        assert [m.name for m in s.running()] == loaded_after
        if keep_alive == -1:
            assert s.running()[0].expires_at is None
        await s.close()
    asyncio.run(main())


def test_keep_alive_expiry_unloads():
    async def main():
        s = scheduler(make_spec("a"))
        await request(s, "a", keep_alive=0.05)
        await asyncio.wait_for(RecordingEngine.until(("close", "a")), 30)
        assert s.running() == [] and RecordingEngine.events == [("start", "a"), ("close", "a")]
    asyncio.run(main())


def test_max_loaded_models_evicts_least_recently_used_idle():
    async def main():
        s = scheduler(make_spec("a"), make_spec("b"), make_spec("c"), max_loaded_models=2)
        await request(s, "a")
        await request(s, "b")
        await request(s, "a")  # a is now the most recent
        await request(s, "c")
        assert sorted(m.name for m in s.running()) == ["a", "c"]
        assert ("close", "b") in RecordingEngine.events
        await s.close()
    asyncio.run(main())


def test_memory_budget_evicts_idle_models_before_a_load():
    async def main():
        s = scheduler(make_spec("a", size=60), make_spec("b", size=60), memory_budget=100)
        await request(s, "a")
        await request(s, "b")
        assert [m.name for m in s.running()] == ["b"]
        await s.close()
    asyncio.run(main())


def test_a_load_waits_for_a_busy_model_to_finish_when_memory_is_short():
    async def main():
        s = scheduler(make_spec("a", size=60), make_spec("b", size=60), memory_budget=100)
        held, release = asyncio.Event(), asyncio.Event()
        busy = asyncio.create_task(request(s, "a", held=held, release=release))
        await held.wait()
        s.making_room.clear()
        load_b = asyncio.create_task(request(s, "b"))
        await s.making_room.wait()
        assert ("start", "b") not in RecordingEngine.events and not load_b.done()  # b waits for room
        release.set()
        await load_b
        assert busy.done()
        assert RecordingEngine.events.index(("close", "a")) < RecordingEngine.events.index(("start", "b"))
        await s.close()
    asyncio.run(main())


def test_queue_full_is_server_busy():
    async def main():
        s = scheduler(make_spec("a", slots=1), max_queue=1)
        release, held = asyncio.Event(), [asyncio.Event(), asyncio.Event()]
        holders = [asyncio.create_task(request(s, "a", held=h, release=release)) for h in held]
        for h in held:
            await h.wait()  # one in the slot, one in the queue
        with pytest.raises(ServerBusyError):  # the server answers it with 503 (tests/server/test_errors.py)
            await request(s, "a")
        release.set()
        await asyncio.gather(*holders)
        await s.close()
    asyncio.run(main())


def test_unknown_model_is_not_found():
    async def main():
        with pytest.raises(ModelNotFoundError):
            await request(scheduler(), "nope")
    asyncio.run(main())


def test_spec_only_change_swaps_without_reload_and_running_requests_keep_their_spec():
    async def main():
        source = Source(make_spec("a", system="old"))
        s = Scheduler(source, SchedulerSettings(), engine_factory=RecordingEngine)
        seen = []
        held, release = asyncio.Event(), asyncio.Event()

        async def long():
            async with s.use("a") as lease:
                held.set()
                await release.wait()
                seen.append(lease.spec.system)

        task = asyncio.create_task(long())
        await held.wait()
        source.specs["a"] = make_spec("a", system="new")
        async with s.use("a") as lease:
            seen.append(lease.spec.system)
        release.set()
        await task
        assert seen == ["new", "old"] and RecordingEngine.events == [("start", "a")]
        await s.close()
    asyncio.run(main())


def test_load_change_loads_beside_and_drains_the_old_runner():
    async def main():
        source = Source(make_spec("a", num_ctx=2048))
        s = Scheduler(source, SchedulerSettings(), engine_factory=RecordingEngine)
        held, release = asyncio.Event(), asyncio.Event()
        old = asyncio.create_task(request(s, "a", held=held, release=release))
        await held.wait()
        source.specs["a"] = make_spec("a", num_ctx=4096)
        await request(s, "a")
        assert RecordingEngine.events == [("start", "a"), ("start", "a")]  # the old one still serves
        release.set()
        await old
        assert RecordingEngine.events[-1] == ("close", "a")
        assert len(s.running()) == 1 and s.running()[0].spec.load.num_ctx == 4096
        await s.close()
    asyncio.run(main())


def test_unload_closes_idle_model_and_reports_unknown():
    async def main():
        s = scheduler(make_spec("a"))
        await request(s, "a")
        assert await s.unload("a") is True
        assert s.running() == [] and await s.unload("a") is False
    asyncio.run(main())


def test_a_spec_the_caller_already_resolved_is_not_looked_up_again():
    class Counting(Source):
        calls = 0

        def spec(self, name):
            Counting.calls += 1
            return super().spec(name)

    async def main():
        source = Counting(make_spec("a"))
        s = Scheduler(source, SchedulerSettings(), engine_factory=RecordingEngine)
        async with s.use("a", None, source.specs["a"]) as lease:
            assert lease.spec.name == "a"
        assert Counting.calls == 0
        await s.close()
    asyncio.run(main())
