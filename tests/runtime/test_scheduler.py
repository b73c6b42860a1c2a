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
    events: list[tuple[str, str]] = []

    def __init__(self, spec: RuntimeSpec):
        self.spec = spec
        self.load_duration_ns = 1000

    async def start(self) -> None:
        await asyncio.sleep(0.01)
        self.events.append(("start", self.spec.name))

    async def close(self) -> None:
        self.events.append(("close", self.spec.name))


@pytest.fixture(autouse=True)
def _clear():
    RecordingEngine.events = []


def scheduler(*specs: RuntimeSpec, **settings) -> Scheduler:
    return Scheduler(Source(*specs), SchedulerSettings(**settings), engine_factory=RecordingEngine)


async def request(s: Scheduler, name: str, keep_alive: float | None = None, hold: float = 0.0) -> int:
    async with s.use(name, keep_alive) as lease:
        await asyncio.sleep(hold)
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
        s = scheduler(make_spec("a"))
        await asyncio.gather(*(request(s, "a") for _ in range(5)))
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
        await asyncio.sleep(0.2)
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
        busy = asyncio.create_task(request(s, "a", hold=0.2))
        await asyncio.sleep(0.05)
        await request(s, "b")
        assert busy.done()  # b could load only after a's request finished
        assert RecordingEngine.events.index(("close", "a")) < RecordingEngine.events.index(("start", "b"))
        await s.close()
    asyncio.run(main())


def test_queue_full_is_server_busy():
    async def main():
        s = scheduler(make_spec("a", slots=1), max_queue=1)
        holders = [asyncio.create_task(request(s, "a", hold=0.3)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(ServerBusyError):  # the server answers it with 503 (tests/server/test_errors.py)
            await request(s, "a")
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

        async def long():
            async with s.use("a") as lease:
                await asyncio.sleep(0.1)
                seen.append(lease.spec.system)

        task = asyncio.create_task(long())
        await asyncio.sleep(0.03)
        source.specs["a"] = make_spec("a", system="new")
        async with s.use("a") as lease:
            seen.append(lease.spec.system)
        await task
        assert seen == ["new", "old"] and RecordingEngine.events == [("start", "a")]
        await s.close()
    asyncio.run(main())


def test_load_change_loads_beside_and_drains_the_old_runner():
    async def main():
        source = Source(make_spec("a", num_ctx=2048))
        s = Scheduler(source, SchedulerSettings(), engine_factory=RecordingEngine)
        old = asyncio.create_task(request(s, "a", hold=0.15))
        await asyncio.sleep(0.05)
        source.specs["a"] = make_spec("a", num_ctx=4096)
        await request(s, "a")
        assert RecordingEngine.events == [("start", "a"), ("start", "a")]
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
