"""Concurrency under hostile clients: disconnects by the thousand, a flood against a small queue,
and create, delete and chat racing on one name. The server process must not grow (open files,
running requests), must not deadlock, and must answer each request with a success or a 4xx/503.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading

import httpx
import psutil
import pytest

from tests.security.conftest import assert_alive
from tests.waiting import until

CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}


def _disconnect_mid_stream(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        with client.stream("POST", "/api/chat", json=CHAT) as response:
            assert response.status_code == 200
            assert json.loads(next(response.iter_lines()))["done"] is False
        # leaving the block closes the connection with the stream still running


def test_a_thousand_disconnects_mid_stream_leave_nothing_behind(fake) -> None:
    fake.engines.endless = True  # every stream runs until its client goes
    me = psutil.Process()
    for _ in range(20):  # the server's own connections, pools and threads settle first
        _disconnect_mid_stream(fake.url)
    assert until(lambda: fake.in_flight() == 0)
    fds = me.num_fds()
    for _ in range(1000):
        _disconnect_mid_stream(fake.url)
    assert until(lambda: fake.in_flight() == 0)
    assert until(lambda: me.num_fds() <= fds)
    assert fake.engines.closed_early == 1020
    assert_alive(fake)


def test_two_hundred_chats_against_a_queue_of_sixteen(serve) -> None:
    server = serve(max_queue=16)
    server.engines.endless = True
    release = threading.Event()
    statuses: list[int] = []
    lock = threading.Lock()

    def chat() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            with client.stream("POST", "/api/chat", json=CHAT) as response:
                with lock:
                    statuses.append(response.status_code)
                if response.status_code == 503:
                    assert response.headers["retry-after"].isdigit()
                    response.read()
                    assert json.loads(response.text) == {
                        "error": "server busy, please try again.  maximum pending requests exceeded"}
                    return
                next(response.iter_lines())
                release.wait(60)

    peak = 0

    def watch() -> None:
        nonlocal peak
        while not release.is_set():
            peak = max(peak, server.in_flight())

    watcher = threading.Thread(target=watch)
    watcher.start()
    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        futures = [pool.submit(chat) for _ in range(200)]
        assert until(lambda: len(statuses) == 200, timeout=120)
        release.set()
        for f in futures:
            f.result(timeout=60)
    watcher.join()
    # Never more than the one slot and the 16 queued at once; everything beyond turned away.
    assert 0 < peak <= 17
    assert statuses.count(503) >= 100 and set(statuses) <= {200, 503}
    assert until(lambda: server.in_flight() == 0)
    assert_alive(server)


def test_create_delete_and_chat_racing_on_one_name(fake) -> None:
    def create() -> int:
        return httpx.post(fake.url + "/api/create", json={"model": "racer", "from": "smol", "stream": False},
                          timeout=60).status_code

    def delete() -> int:
        return httpx.request("DELETE", fake.url + "/api/delete", json={"model": "racer"}, timeout=60).status_code

    def chat() -> int:
        return httpx.post(fake.url + "/api/chat", json={**CHAT, "model": "racer", "stream": False},
                          timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(f) for _ in range(20) for f in (create, delete, chat)]
        codes = [f.result(timeout=120) for f in futures]
    assert 500 not in codes and set(codes) <= {200, 404}, codes
    # The store is consistent: the name is either a whole model or gone, and a last create works.
    names = [m["name"] for m in fake.client.get("/api/tags").json()["models"]]
    if "racer:latest" in names:
        assert fake.client.post("/api/show", json={"model": "racer"}).status_code == 200
    assert create() == 200
    assert chat() == 200
    assert delete() == 200
    assert "racer:latest" not in [m["name"] for m in fake.client.get("/api/tags").json()["models"]]
    assert_alive(fake)


@pytest.mark.model
def test_disconnects_mid_stream_with_the_real_model(tmp_path, smollm2_gguf) -> None:
    from corral.config.settings import Settings
    from corral.dsl import parse_modelfile
    from corral.server.app import create_app
    from corral.store.create import create_model
    from corral.store.store import Store
    from tests.server.live import LiveServer
    from tests.specs import cpu_options

    definition = parse_modelfile(f"FROM {smollm2_gguf}\nPARAMETER num_ctx 512\n", str(tmp_path / "Modelfile")).definition
    create_model(Store(tmp_path / "models"), "smol", definition, base_dir=tmp_path, options=cpu_options(num_parallel=2))
    app = create_app(Settings(models=tmp_path / "models", num_parallel=2, keep_alive="-1"), name="real_disconnects")
    me = psutil.Process()

    def running() -> int:
        async def count() -> int:
            return sum(m.in_flight for m in app.ctx.scheduler.running())
        return live.call(count())

    with LiveServer(app) as live:
        for _ in range(5):
            _disconnect_mid_stream(live.url)
        assert until(lambda: running() == 0)
        fds = me.num_fds()
        for _ in range(50):
            _disconnect_mid_stream(live.url)
        assert until(lambda: running() == 0)
        assert until(lambda: me.num_fds() <= fds)
        r = httpx.post(live.url + "/api/chat", json={**CHAT, "stream": False, "options": {"num_predict": 2}}, timeout=120)
        assert r.status_code == 200 and r.json()["eval_count"] == 2
