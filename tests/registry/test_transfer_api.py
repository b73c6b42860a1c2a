"""/api/pull, /api/push and /api/create's pull of a missing base, on a live server, against the real
docker-registry on loopback; and the official `ollama` client's pull() and push() against them."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import httpx
import ollama
import pytest
from sanic import Sanic

from corral.config.settings import Settings
from corral.server.app import create_app
from corral.store.names import parse
from corral.store.store import Store
from tests.registry.conftest import make_model
from tests.registry.hostile import MODEL, HostileRegistry, digest_of
from tests.server.live import LiveServer

Sanic.test_mode = True  # each test builds its own app under the same name

PULL = ["pulling manifest", "pulling *", "verifying sha256 digest", "writing manifest", "success"]
PUSH = ["retrieving manifest", "pushing *", "pushing manifest", "success"]


def served(store: Path, **settings) -> LiveServer:
    return LiveServer(create_app(Settings(models=store, **settings)))


def lines(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in response.text.splitlines()]


def shape(objects: list[dict]) -> list[str]:
    """The statuses in order, each run of one status once, every layer's status as `<verb> *`."""
    out: list[str] = []
    for o in objects:
        status = o.get("status") or f"error: {o['error']}"
        if "digest" in o:
            assert status == f"{status.split()[0]} {o['digest'][7:19]}" and o["total"] >= o.get("completed", 0)
            status = status.split()[0] + " *"
        if not out or out[-1] != status:
            out.append(status)
    return out


def manifest_file(store: Store, name: str) -> bytes:
    return store.manifests_dir.joinpath(*parse(name).filepath_parts()).read_bytes()


@pytest.fixture
def source(tmp_path) -> Store:
    store = Store(tmp_path / "source")
    make_model(store, "tiny", tmp_path / "defs")
    return store


@pytest.fixture
def name(docker_registry, request) -> str:
    return f"{docker_registry.host}/library/{request.node.name.replace('_', '-')[:60].strip('-')}:v1"


def test_push_then_pull_stream_ollamas_statuses_and_the_model_is_served_at_once(source, name, tmp_path):
    source.copy("tiny", name)
    layers = source.read_manifest(name).all_layers()
    with served(source.root) as server:
        pushed = lines(httpx.post(f"{server.url}/api/push", json={"model": name, "insecure": True}, timeout=60))
    assert shape(pushed) == PUSH
    assert [o["digest"] for o in pushed if "digest" in o][-1] == str(layers[-1].digest)

    target = Store(tmp_path / "target")
    with served(target.root) as server:
        pulled = lines(httpx.post(f"{server.url}/api/pull", json={"name": name, "insecure": True}, timeout=60))
        assert shape(pulled) == PULL
        last = {o["digest"]: o for o in pulled if "digest" in o}
        assert [(d, o["completed"]) for d, o in last.items()] == [(str(l.digest), l.size) for l in layers]
        shown = parse(name).display_shortest()
        tags = httpx.get(f"{server.url}/api/tags").json()["models"]
        assert [m["name"] for m in tags] == [shown]
        show = httpx.post(f"{server.url}/api/show", json={"model": name})
        assert show.status_code == 200 and show.json()["system"] == "Be brief."
    assert manifest_file(target, name) == manifest_file(source, name)


def test_stream_false_answers_the_last_status(source, name, tmp_path):
    source.copy("tiny", name)
    with served(source.root) as server:
        r = httpx.post(f"{server.url}/api/push", json={"model": name, "insecure": True, "stream": False}, timeout=60)
    assert (r.status_code, r.headers["content-type"], r.json()) == (200, "application/json", {"status": "success"})
    with served(tmp_path / "target") as server:
        r = httpx.post(f"{server.url}/api/pull", json={"model": name, "insecure": True, "stream": False}, timeout=60)
    assert (r.status_code, r.headers["content-type"], r.json()) == (200, "application/json", {"status": "success"})


def test_the_ollama_client_pulls_and_pushes_unchanged(source, name, tmp_path):
    source.copy("tiny", name)
    with served(source.root) as server:
        client = ollama.Client(host=server.url)
        statuses = [p.status for p in client.push(name, insecure=True, stream=True)]
        assert statuses[0] == "retrieving manifest" and statuses[-1] == "success"
    with served(tmp_path / "target") as server:
        client = ollama.Client(host=server.url)
        parts = list(client.pull(name, insecure=True, stream=True))
        assert parts[0].status == "pulling manifest" and parts[-1].status == "success"
        layer = next(p for p in parts if p.digest)
        assert layer.status == f"pulling {layer.digest[7:19]}" and layer.total > 0
        assert client.pull(name, insecure=True).status == "success"  # again, every blob already there
        assert [m.model for m in client.list().models] == [parse(name).display_shortest()]


def test_a_missing_model_fails_as_ollama_says_it(docker_registry, tmp_path):
    missing = f"{docker_registry.host}/library/nothing-here:v1"
    with served(tmp_path / "store") as server:
        streamed = lines(httpx.post(f"{server.url}/api/pull", json={"model": missing, "insecure": True}))
        assert shape(streamed) == ["pulling manifest", "error: pull model manifest: file does not exist"]
        r = httpx.post(f"{server.url}/api/pull", json={"model": missing, "insecure": True, "stream": False})
        assert (r.status_code, r.json()) == (404, {"error": "pull model manifest: file does not exist"})
        client = ollama.Client(host=server.url)
        for stream in (True, False):
            with pytest.raises(ollama.ResponseError, match="pull model manifest: file does not exist"):
                result = client.pull(missing, insecure=True, stream=stream)
                list(result) if stream else result
        unknown = f"model '{parse(missing).display_shortest()}' not found"
        streamed = lines(httpx.post(f"{server.url}/api/push", json={"model": missing, "insecure": True}))
        assert shape(streamed) == ["retrieving manifest", f"error: {unknown}"]
        r = httpx.post(f"{server.url}/api/push", json={"model": missing, "insecure": True, "stream": False})
        assert (r.status_code, r.json()) == (404, {"error": unknown})
    assert not (tmp_path / "store" / "manifests").exists()


@pytest.mark.parametrize("paths, body, status, error", [
    (["/api/pull", "/api/push"], {"model": "bad name!"}, 400, "invalid model name 'bad name!'"),
    (["/api/pull", "/api/push"], {}, 400, "model: Field required"),
    (["/api/pull"], {"model": "http://127.0.0.1:9/library/x"}, 400, "insecure protocol http (http://127.0.0.1:9)"),
])
def test_refusals_before_anything_streams_get_their_status(tmp_path, paths, body, status, error):
    with served(tmp_path / "store") as server:
        for path in paths:
            r = httpx.post(f"{server.url}{path}", json=body)
            assert r.status_code == status and r.json()["error"].startswith(error), (path, r.text)


def test_create_pulls_a_from_model_the_store_lacks(source, name, tmp_path, docker_registry):
    source.copy("tiny", name)
    with served(source.root) as server:
        assert lines(httpx.post(f"{server.url}/api/push", json={"model": name, "insecure": True}))[-1] == {
            "status": "success"}
    target = Store(tmp_path / "target")
    # A default-host name, served by CORRAL_REGISTRY's mirror.
    short = name.split("/", 2)[2]  # library/<model>:v1 -> registry.ollama.ai/library/<model>:v1
    with served(target.root, registry=docker_registry.host) as server:
        body = {"model": "mine", "from": short, "system": "Be very brief.", "insecure": True}
        statuses = shape(lines(httpx.post(f"{server.url}/api/create", json=body, timeout=60)))
        assert statuses[:4] == ["pulling manifest", "pulling *", "verifying sha256 digest", "writing manifest"]
        assert statuses[-2:] == ["writing manifest", "success"] and statuses.count("success") == 1
        names = sorted(m["name"] for m in httpx.get(f"{server.url}/api/tags").json()["models"])
        assert names == sorted(["mine:latest", parse(short).display_shortest()])
        assert httpx.post(f"{server.url}/api/show", json={"model": "mine"}).json()["system"] == "Be very brief."


def test_a_client_that_goes_away_cancels_the_pull_and_the_next_one_resumes(tmp_path):
    weights = os.urandom(600_000)
    with HostileRegistry() as registry:
        registry.add_model("library/m:latest", [(MODEL, weights)])
        registry.behaviour.stall_after = 50_000  # one blob read sends this much, then holds on
        store = Store(tmp_path / "store")
        name = f"{registry.host}/library/m"
        partial = store.blob_path(digest_of(weights)).with_name(f"sha256-{digest_of(weights)[7:]}-partial")
        with served(store.root) as server:
            with httpx.stream("POST", f"{server.url}/api/pull", json={"model": name, "insecure": True},
                              timeout=60) as response:
                for line in response.iter_lines():
                    if json.loads(line).get("digest") == digest_of(weights) and registry.stalled.is_set():
                        break  # ... and the connection closes
            # The cancelled pull lets go of the partial file at once; one still running would hold it
            # until the stalled read timed out (a minute).
            deadline = time.monotonic() + 30
            with partial.open("rb") as f:
                while True:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        assert time.monotonic() < deadline, "the pull went on after its client left"
                        time.sleep(0.05)
                fcntl.flock(f, fcntl.LOCK_UN)
            assert not store.has_model(name) and partial.exists()
            first = registry.sent(digest_of(weights))
            registry.behaviour.stall_after = None
            registry.release.set()
            r = httpx.post(f"{server.url}/api/pull", json={"model": name, "insecure": True, "stream": False},
                           timeout=60)
            assert r.json() == {"status": "success"}
        assert store.blob_path(digest_of(weights)).read_bytes() == weights
        assert registry.sent(digest_of(weights)) - first < len(weights)  # it resumed: not all again
