"""GET /metrics: a real server scraped after real requests, parsed with prometheus_client's parser.

The fast tests run the real scheduler over scripted engines (tests/server/fakes.py), so every
count is known from the script: 7 prompt tokens and 3 generated ones per generation. One test
scrapes a server running SmolLM2 (marked `model`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from corral.compiler.compile import CompileOptions
from corral.config.settings import Settings
from corral.machine.gpus import NvmlProbe
from corral.runtime.scheduler import Scheduler, SchedulerSettings
from corral.server.app import create_app
from corral.sources.catalog import Catalog
from corral.sources.stored import Models
from corral.store.store import Store
from tests.compiler.test_plan import FakeNvml
from tests.server.fakes import ScriptedEngines
from tests.server.live import LiveServer
from tests.waiting import until

README = Path(__file__).resolve().parents[2] / "README.md"
MODEL = "smol:latest"
CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "stream": False}
GATEWAY = {  # the Gateway API Inference Extension's model-server protocol metrics: name -> type
    "corral_num_requests_waiting": "gauge",
    "corral_num_requests_running": "gauge",
    "corral_kv_cache_usage_perc": "gauge",
    "corral_lora_requests_info": "gauge",
}


def scrape(client: httpx.Client) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """/metrics as {family: {(sample name, sorted labels): value}}, families keyed by their name."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[str, dict] = {}
    for family in text_string_to_metric_families(response.text):
        samples = out.setdefault(family.name, {})
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def types(client: httpx.Client) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(client.get("/metrics").text)}


def value(metrics: dict, family: str, sample: str | None = None, **labels: str) -> float:
    return metrics[family][(sample or family, tuple(sorted(labels.items())))]


def test_requests_are_counted_by_route_pattern_and_status(fake):
    for _ in range(3):
        assert fake.client.post("/api/chat", json=CHAT).status_code == 200
    assert fake.client.post("/api/generate", json={"model": "smol", "prompt": "Hi", "stream": False}).status_code == 200
    assert fake.client.post("/api/chat", json={**CHAT, "model": "nope"}).status_code == 404
    assert fake.client.head("/api/blobs/sha256:" + "0" * 64).status_code == 404
    assert fake.client.get("/no/such/page/1").status_code == 404
    assert fake.client.get("/no/such/page/2").status_code == 404
    m = scrape(fake.client)
    counted = {dict(labels)["route"] + " " + dict(labels)["method"] + " " + dict(labels)["status"]: v
               for (name, labels), v in m["corral_http_requests"].items() if name == "corral_http_requests_total"}
    assert counted == {
        "/api/chat POST 200": 3,
        "/api/generate POST 200": 1,
        "/api/chat POST 404": 1,
        "/api/blobs/<digest:str> HEAD 404": 1,
        "unmatched GET 404": 2,
    }


def test_tokens_and_latency_histograms_per_model_and_key(fake):
    for _ in range(2):
        assert fake.client.post("/api/chat", json=CHAT).status_code == 200
    with fake.client.stream("POST", "/v1/chat/completions",
                            json={"model": "smol", "messages": [{"role": "user", "content": "Hi"}],
                                  "stream": True}) as streamed:
        assert streamed.status_code == 200
        streamed.read()
    m = scrape(fake.client)
    assert value(m, "corral_prompt_tokens", "corral_prompt_tokens_total", model=MODEL, key="") == 3 * 7
    assert value(m, "corral_generation_tokens", "corral_generation_tokens_total", model=MODEL, key="") == 3 * 3
    assert value(m, "corral_generations", "corral_generations_total", model=MODEL, reason="stop") == 3
    for family in ("corral_time_to_first_token_seconds", "corral_request_duration_seconds"):
        assert value(m, family, family + "_count", model=MODEL) == 3
        assert value(m, family, family + "_bucket", model=MODEL, le="+Inf") == 3
        assert value(m, family, family + "_sum", model=MODEL) > 0


def test_embedding_inputs_count_as_prompt_tokens(fake):
    assert fake.client.post("/api/embed", json={"model": "smol", "input": ["a", "b", "c"]}).status_code == 200
    m = scrape(fake.client)
    assert value(m, "corral_prompt_tokens", "corral_prompt_tokens_total", model=MODEL, key="") == \
        3 * fake.engines.tokens_per_input
    assert ("corral_generation_tokens_total", (("key", ""), ("model", MODEL))) not in m["corral_generation_tokens"]


def test_loaded_model_gauges(fake):
    assert fake.client.post("/api/chat", json=CHAT).status_code == 200
    m = scrape(fake.client)
    spec = fake.models.spec("smol")
    digest = spec.digest
    assert value(m, "corral_model_loaded", model=MODEL, digest=digest, processor="cpu") == 1
    assert value(m, "corral_model_slots", model=MODEL) == 1
    assert value(m, "corral_model_requests_running", model=MODEL) == 0
    assert value(m, "corral_model_slot_usage_ratio", model=MODEL) == 0
    assert value(m, "corral_model_kv_cache_usage_ratio", model=MODEL) == 0
    assert value(m, "corral_model_kv_cache_cells", model=MODEL) == spec.plan.n_ctx
    assert value(m, "corral_model_load_seconds", model=MODEL) == fake.engines.load_duration_ns / 1e9
    assert value(m, "corral_model_gpu_layers", model=MODEL) == 0
    assert value(m, "corral_model_layers", model=MODEL) == spec.plan.layer_count
    assert value(m, "corral_model_memory_planned_bytes", model=MODEL, device="cpu") == spec.plan.cpu_bytes
    assert value(m, "corral_worker_crashes", "corral_worker_crashes_total") == 0
    assert value(m, "corral_library_reloads", "corral_library_reloads_total") == 0
    assert value(m, "corral_library_reload_errors", "corral_library_reload_errors_total") == 0


def test_running_and_queued_requests_while_streams_are_open(fake):
    """One slot: the first endless stream runs, the second waits for the slot."""
    fake.engines.endless = True
    body = {"model": "smol", "prompt": "Hi", "stream": True}

    async def stream() -> None:  # on the server's loop, so the test can cancel it: the client leaves
        async with httpx.AsyncClient(base_url=fake.url, timeout=60) as client:
            async with client.stream("POST", "/api/generate", json=body) as r:
                async for _ in r.aiter_lines():
                    pass

    streams = [asyncio.run_coroutine_threadsafe(stream(), fake.server.loop) for _ in range(2)]
    try:
        until(lambda: fake.in_flight() == 2)
        m = scrape(fake.client)
        assert value(m, "corral_num_requests_running") == 1
        assert value(m, "corral_num_requests_waiting") == 1
        assert value(m, "corral_model_requests_running", model=MODEL) == 1
        assert value(m, "corral_model_requests_waiting", model=MODEL) == 1
        assert value(m, "corral_model_slot_usage_ratio", model=MODEL) == 1
    finally:
        for s in streams:
            s.cancel()
    until(lambda: fake.in_flight() == 0)
    m = scrape(fake.client)
    assert value(m, "corral_num_requests_running") == 0 and value(m, "corral_num_requests_waiting") == 0


def test_gateway_metrics_names_types_and_lora_labels(fake):
    assert fake.client.post("/api/chat", json=CHAT).status_code == 200
    kinds = types(fake.client)
    assert {name: kinds.get(name) for name in GATEWAY} == GATEWAY
    m = scrape(fake.client)
    assert 0 <= value(m, "corral_kv_cache_usage_perc") <= 1
    ((_, labels), stamp), = m["corral_lora_requests_info"].items()
    labels = dict(labels)
    assert labels == {"running_lora_adapters": "", "waiting_lora_adapters": "",
                      "max_lora": str(fake.scheduler.settings.max_loaded_models)}
    assert stamp > 1.7e9  # a Unix time: when the lists last changed


def test_every_app_has_its_own_registry(fake):
    other = create_app(fake.settings, scheduler=fake.scheduler, models=fake.models, store=fake.store, name="other")
    assert fake.client.post("/api/chat", json=CHAT).status_code == 200
    mine, theirs = fake.server.app.ctx.metrics, other.ctx.metrics
    assert mine.registry is not theirs.registry
    assert mine.registry.get_sample_value("corral_http_requests_total",
                                          {"route": "/api/chat", "method": "POST", "status": "200"}) == 1
    assert theirs.registry.get_sample_value("corral_http_requests_total",
                                            {"route": "/api/chat", "method": "POST", "status": "200"}) is None
    assert not [n for n in REGISTRY._names_to_collectors if n.startswith("corral_")]  # the global one is untouched


def readme_metrics() -> set[str]:
    section = README.read_text().split("### Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(corral_[a-z_]+)` \|", section, re.MULTILINE))


def test_every_metric_is_in_the_readme_table(fake):
    assert fake.client.post("/api/chat", json=CHAT).status_code == 200
    exposed = {name + "_total" if kind == "counter" else name for name, kind in types(fake.client).items()}
    assert exposed == readme_metrics()


# -- CPU fallback --------------------------------------------------------------------------------


@pytest.fixture
def starved(tmp_path, fake_store):
    """The fake server on a machine whose one GPU (read through a fake NVML) has 64 MiB free: too
    little for a layer of the tiny model with its compute buffer, so the plan falls back to the CPU."""
    inventory = NvmlProbe(nvml=FakeNvml([("NVIDIA T4", 16 << 30, 64 << 20)]), environ={}).read()
    assert len(inventory.devices) == 1
    options = CompileOptions(inventory=inventory, memory_bytes=1 << 40, num_parallel=1)
    settings = Settings(models=tmp_path / "models")
    shutil.copytree(fake_store, settings.models)
    store = Store(settings.models)
    models = Catalog(Models(store, options))
    scheduler = Scheduler(models, SchedulerSettings(gpus=len(inventory.devices)), engine_factory=ScriptedEngines())
    app = create_app(settings, scheduler=scheduler, models=models, store=store)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, models, server


def test_a_model_on_the_cpu_beside_a_gpu_is_warned_about_and_shown_in_ps(starved, caplog, capsys, monkeypatch):
    from corral.cli.main import main

    client, models, server = starved
    reason = models.spec("smol").plan.reasons[-1]
    assert reason.startswith("no layer fits on GPU: GPU 0 (NVIDIA T4, 64.0 MiB free)")
    with caplog.at_level(logging.WARNING, logger="corral.runtime.scheduler"):
        assert client.post("/api/chat", json=CHAT).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{MODEL} runs on the CPU although this machine has 1 GPU(s): {reason}"]
    (row,) = client.get("/api/ps").json()["models"]
    assert (row["processor"], row["cpu_reason"], row["size_vram"]) == ("cpu", reason, 0)
    monkeypatch.setenv("CORRAL_HOST", f"127.0.0.1:{server.port}")
    capsys.readouterr()
    assert main(["ps"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL"]
    assert "100% CPU" in lines[1]
    assert lines[2:] == [f"{MODEL} runs on the CPU although this machine has a GPU: {reason}"]


def test_a_cpu_only_machine_shows_no_cpu_reason(fake):
    assert fake.client.post("/api/chat", json=CHAT).status_code == 200
    (row,) = fake.client.get("/api/ps").json()["models"]
    assert row["processor"] == "cpu" and "cpu_reason" not in row


def test_worker_crashes_are_read_from_the_scheduler(fake):
    assert fake.client.post("/api/chat", json=CHAT).status_code == 200
    (running,) = fake.scheduler.running()
    running.engine.inner.crashes = 2  # what a real Engine counts when its worker dies or hangs
    assert value(scrape(fake.client), "corral_worker_crashes", "corral_worker_crashes_total") == 2


def test_kv_cache_usage_is_the_workers_last_report(fake):
    """The engine keeps its worker's last pool report (`pool_stats`); /metrics divides what running
    requests hold by the pool, per model and over the server."""
    assert fake.client.post("/api/chat", json=CHAT).status_code == 200
    (running,) = fake.scheduler.running()
    running.engine.inner.pool_stats = SimpleNamespace(pool_cells=2048, used_cells=512)
    m = scrape(fake.client)
    assert value(m, "corral_model_kv_cache_usage_ratio", model=MODEL) == 0.25
    assert value(m, "corral_model_kv_cache_cells", model=MODEL) == 2048
    assert value(m, "corral_kv_cache_usage_perc") == 0.25


@pytest.mark.model
def test_a_real_model_scraped_after_two_generations(tmp_path, smollm2_gguf):
    import ollama

    from tests.server.smol import smol_store as make_store

    store = make_store(tmp_path, smollm2_gguf)
    app = create_app(Settings(models=store, num_parallel=2, keep_alive="-1"), name="corral_metrics_e2e")
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        native = ollama.Client(host=server.url, timeout=300)
        answers = [native.generate(model="smol", prompt=p, options={"temperature": 0, "num_predict": 5})
                   for p in ("Why is the sky blue?", "Name a colour.")]
        m = scrape(client)
        model = "smol:latest"
        assert value(m, "corral_prompt_tokens", "corral_prompt_tokens_total", model=model, key="") == \
            sum(a.prompt_eval_count for a in answers)
        assert value(m, "corral_generation_tokens", "corral_generation_tokens_total", model=model, key="") == \
            sum(a.eval_count for a in answers)
        for family in ("corral_time_to_first_token_seconds", "corral_request_duration_seconds"):
            assert value(m, family, family + "_count", model=model) == 2
        assert value(m, "corral_model_memory_resident_bytes", model=model) > 50 << 20  # the weights, paged in
        assert value(m, "corral_model_load_seconds", model=model) > 0
        assert value(m, "corral_num_requests_running") == 0 and value(m, "corral_num_requests_waiting") == 0
        assert 0 <= value(m, "corral_kv_cache_usage_perc") <= 1


def test_library_reloads_and_their_errors_are_counted(fake, tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    (library / "good.Modelfile").write_text("FROM smol\n")
    (library / "bad.Modelfile").write_text("FROM smol\nPARAMETER temprature 1\n")
    answer = fake.client.post("/api/library/apply", json={"path": str(library)})
    assert answer.status_code == 200, answer.text
    assert sorted(c["action"] for c in answer.json()["changes"]) == ["create", "error"]
    m = scrape(fake.client)
    assert value(m, "corral_library_reloads", "corral_library_reloads_total") == 1
    assert value(m, "corral_library_reload_errors", "corral_library_reload_errors_total") == 1


def test_tokens_are_counted_per_key_and_refusals_by_status(fake):
    from corral.auth.keys import KeyFile
    from corral.auth.scopes import Scope

    keys = KeyFile(fake.settings.models.parent)
    team, _ = keys.add("team-a", Scope.INFERENCE)
    ops, _ = keys.add("ops", Scope.ADMIN)
    for key, times in ((team, 2), (ops, 1)):
        for _ in range(times):
            assert fake.client.post("/api/chat", json=CHAT, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert fake.client.post("/api/chat", json=CHAT).status_code == 401
    m = scrape(fake.client)  # from loopback: open even now that keys exist
    assert value(m, "corral_prompt_tokens", "corral_prompt_tokens_total", model=MODEL, key="team-a") == 2 * 7
    assert value(m, "corral_generation_tokens", "corral_generation_tokens_total", model=MODEL, key="ops") == 3
    assert value(m, "corral_http_requests", "corral_http_requests_total",
                 route="/api/chat", method="POST", status="401") == 1
