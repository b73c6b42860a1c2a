"""Crash isolation with the real engine: a model's worker that dies or hangs fails only its own
requests, with a 500 naming the model; the next request starts a fresh worker, and the API
process and the other models go on as if nothing happened.

Two models (the same SmolLM2 weights under two names) run in two workers. The worker of `smol`
is found as the server's child process that appears when `smol` loads.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
from pathlib import Path
from typing import Iterator

import httpx
import psutil
import pytest

from corral.config.settings import Settings
from corral.dsl import parse_modelfile
from corral.server.app import create_app
from corral.store.create import create_model
from corral.store.store import Store
from tests.server.live import LiveServer
from tests.specs import cpu_options
from tests.waiting import until

pytestmark = pytest.mark.model

# The grammar rules out an early end of text, so this answer outlasts every check of the test.
LONG = {"messages": [{"role": "user", "content": "Tell me a long story."}],
        "format": {"type": "string", "minLength": 4000}, "options": {"num_predict": 4000}}
SHORT = {"messages": [{"role": "user", "content": "Hi"}], "stream": False, "options": {"num_predict": 2}}


@pytest.fixture(scope="module")
def store_root(tmp_path_factory, smollm2_gguf: Path) -> Path:
    root = tmp_path_factory.mktemp("crash")
    for name, num_ctx in (("smol", 1024), ("other", 512)):
        text = f"FROM {smollm2_gguf}\nPARAMETER num_ctx {num_ctx}\n"
        definition = parse_modelfile(text, str(root / "Modelfile")).definition
        create_model(Store(root / "models"), name, definition, base_dir=root, options=cpu_options(num_parallel=2))
    return root / "models"


def serve(store_root: Path, **fields) -> LiveServer:
    settings = Settings(models=store_root, num_parallel=2, keep_alive="-1", **fields)
    return LiveServer(create_app(settings, name=f"crash{len(fields)}"))


def workers() -> set[int]:
    """The pids of the model workers (multiprocessing's spawned children; not its resource tracker)."""
    return {p.pid for p in psutil.Process().children(recursive=True) if "spawn_main" in " ".join(p.cmdline())}


def load(client: httpx.Client, model: str) -> int:
    """Load `model` and return the pid of its worker (the child process that appeared)."""
    before = workers()
    r = client.post("/api/chat", json={"model": model, **SHORT})
    assert r.status_code == 200, r.text
    (pid,) = workers() - before
    return pid


def stream_lines(client: httpx.Client, model: str) -> Iterator[dict]:
    with client.stream("POST", "/api/chat", json={"model": model, **LONG}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            yield json.loads(line)


@pytest.mark.parametrize("how, sig, death", [
    ("killed", signal.SIGKILL, "exited with signal SIGKILL"),
    ("hung", signal.SIGSTOP, "made no progress for 2 s and was killed"),
])
def test_a_worker_that_dies_or_hangs_fails_its_requests_and_restarts(store_root, how, sig, death) -> None:
    with serve(store_root, worker_stall_timeout=2.0) as live, httpx.Client(base_url=live.url, timeout=120) as client:
        pid = load(client, "smol")
        load(client, "other")
        crashes_before = live.call(_crashes(live))
        doomed = stream_lines(client, "smol")
        survivor = stream_lines(client, "other")
        assert next(doomed)["done"] is False and next(survivor)["done"] is False
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # A second request in the same worker, not streamed: it gets the 500 itself.
            waiting = pool.submit(httpx.post, live.url + "/api/chat", json={"model": "smol", **LONG, "stream": False},
                                  timeout=120)
            assert until(lambda: in_flight(live, "smol:latest") == 2)
            next(doomed)  # a token more: the worker has taken the second request in its step
            os.kill(pid, sig)
            rest = list(doomed)
            expected = f"the model's worker stopped: smol:latest {death}"
            assert rest[-1] == {"error": expected}
            assert all(line.get("done") is False for line in rest[:-1])
            answer = waiting.result(timeout=120)
            assert answer.status_code == 500 and answer.json() == {"error": expected}
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        # The other model's stream went on throughout, and goes on.
        for _ in range(5):
            assert next(survivor)["done"] is False
        survivor.close()
        assert client.get("/api/version", timeout=1).status_code == 200
        again = client.post("/api/chat", json={"model": "smol", **SHORT})
        assert again.status_code == 200 and again.json()["eval_count"] == 2
        assert live.call(_crashes(live)) == crashes_before + 1


async def _value(x):
    return x


def _crashes(live: LiveServer):
    return _value(live.app.ctx.scheduler.worker_crashes)


def in_flight(live: LiveServer, model: str) -> int:
    async def count() -> int:
        return sum(m.in_flight for m in live.app.ctx.scheduler.running() if m.name == model)
    return live.call(count())
