"""Hot reload with a real server, real files and the real SmolLM2: the server follows the folder."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from corral.server.app import create_app
from corral.config.settings import Settings
from tests.server.live import LiveServer
from tests.waiting import until

SMOL = "FROM ./smol.gguf\nPARAMETER temperature 0\nPARAMETER num_predict {n}\nPARAMETER num_ctx {ctx}\n"


@pytest.fixture
def served(tmp_path, smollm2_gguf):
    library = tmp_path / "library"
    library.mkdir()
    (library / "smol.gguf").symlink_to(smollm2_gguf)
    (library / "smol.Modelfile").write_text(SMOL.format(n=3, ctx=512))
    app = create_app(Settings(models=tmp_path / "models", library=library, num_parallel=2),
                     name=f"corral_lib_{tmp_path.name[-8:]}".replace("-", "_"))
    # Loads can be slow on a busy 2-core CI machine: wait for answers rather than time out.
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=600) as client:
        yield library, client, live


def generate(client: httpx.Client, model: str = "smol") -> httpx.Response:
    return client.post("/api/generate", json={"model": model, "prompt": "Count: 1, 2, 3,", "stream": False})


def shown(client: httpx.Client, name: str = "smol") -> str:
    """The parameters /api/show reports for `name`."""
    return client.post("/api/show", json={"model": name}).json()["parameters"]


def library_entry(client: httpx.Client, name: str = "smol:latest") -> dict:
    models = client.get("/api/library").json()["models"]
    return next((m for m in models if m["name"] == name), {})


def test_edits_apply_without_restart_and_broken_edits_keep_the_last_good_version(served):
    library, client, live = served
    assert generate(client).json()["eval_count"] == 3
    assert "smol:latest" in [m["name"] for m in client.get("/api/tags").json()["models"]]

    # A sampling parameter: the next request uses it, with no reload.
    pid = live.app.ctx.scheduler.running()[0]
    (library / "smol.Modelfile").write_text(SMOL.format(n=5, ctx=512))
    assert until(lambda: generate(client).json()["eval_count"] == 5)
    assert live.app.ctx.scheduler.running()[0].spec.load.num_ctx == 512 and pid

    # A broken edit: the old version answers, the error and its line are on /api/library.
    (library / "smol.Modelfile").write_text(SMOL.format(n=5, ctx=512) + "PARAMETER temprature 1\n")
    entry = until(lambda: (e := library_entry(client)).get("state") == "error" and e)
    assert entry["error"]["line"] == 5 and entry["error"]["column"] == 11
    assert entry["error"]["message"] == "unknown parameter 'temprature'"
    assert generate(client).json()["eval_count"] == 5

    # Fixed: it recovers.
    (library / "smol.Modelfile").write_text(SMOL.format(n=4, ctx=512))
    assert until(lambda: library_entry(client).get("state") == "ok")
    assert generate(client).json()["eval_count"] == 4

    # Deleted: gone once drained.
    (library / "smol.Modelfile").unlink()
    assert until(lambda: generate(client).status_code == 404)


def test_a_reload_under_load_fails_no_request(served):
    library, client, _ = served
    generate(client)
    failures: list[int] = []
    done = threading.Event()
    answered = threading.Condition()
    counts = [0, 0]

    def hammer(i: int):
        with httpx.Client(base_url=client.base_url, timeout=120) as c:
            while not done.is_set():
                r = generate(c)
                if r.status_code != 200:
                    failures.append(r.status_code)
                with answered:
                    counts[i] += 1
                    answered.notify_all()

    def each_answered(more_than: list[int]) -> bool:
        with answered:
            return answered.wait_for(lambda: all(n > m for n, m in zip(counts, more_than)), 300)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    assert each_answered([0, 0])  # both are asking before the edit
    (library / "smol.Modelfile").write_text(SMOL.format(n=3, ctx=1024))  # num_ctx: a reload
    assert until(lambda: any(m.spec.load.num_ctx == 1024 for m in served[2].app.ctx.scheduler.running()), 60)
    assert each_answered(list(counts))  # requests sent during the switch over have been answered too
    done.set()
    for t in threads:
        t.join()
    assert failures == []


def test_a_burst_of_saves_settles_on_the_last(served):
    library, client, _ = served
    for n in range(1, 21):
        (library / "smol.Modelfile").write_text(SMOL.format(n=n, ctx=512))
        time.sleep(0.05)  # the burst itself: saves a moment apart, as an editor or a checkout makes them
    assert until(lambda: "num_predict                    20" in shown(client))
    time.sleep(1.0)  # no signal says "nothing more will come": give a late event the time to show
    assert "num_predict                    20" in shown(client) and library_entry(client)["state"] == "ok"


def test_rename_on_save_and_editor_temp_files(served):
    library, client, _ = served
    generate(client)
    temp = library / ".smol.Modelfile.swp"
    temp.write_text("garbage")
    staged = library / "smol.Modelfile.tmp"
    staged.write_text(SMOL.format(n=2, ctx=512))
    staged.replace(library / "smol.Modelfile")
    assert until(lambda: generate(client).json()["eval_count"] == 2)
    assert [m["name"] for m in client.get("/api/library").json()["models"]] == ["smol:latest"]


def test_a_stream_running_across_two_edits_completes_intact(served):
    library, client, _ = served
    body = {"model": "smol", "prompt": "Write a long list of fruits.", "options": {"num_predict": 60}}
    with client.stream("POST", "/api/generate", json=body) as stream:
        lines = stream.iter_lines()
        first = json.loads(next(lines))
        (library / "smol.Modelfile").write_text(SMOL.format(n=7, ctx=512))
        assert until(lambda: "num_predict                    7" in shown(client))  # the first edit is live
        (library / "smol.Modelfile").write_text(SMOL.format(n=8, ctx=512))
        assert until(lambda: "num_predict                    8" in shown(client))
        rest = [json.loads(line) for line in lines if line]
    final = rest[-1]
    assert first["done"] is False and final["done"] is True and "error" not in final
    assert final["eval_count"] == 60


def test_corral_apply_plans_then_applies(served, tmp_path, smollm2_gguf):
    _, client, _ = served
    other = tmp_path / "other"
    other.mkdir()
    (other / "smol.gguf").symlink_to(smollm2_gguf)
    (other / "smol.Modelfile").write_text(SMOL.format(n=9, ctx=512))
    (other / "tiny.toml").write_text('from = "./smol.gguf"\n[parameters]\nnum_predict = 2\n')
    plan = client.post("/api/library/apply", json={"path": str(other), "dry_run": True}).json()
    assert sorted((c["name"], c["action"]) for c in plan["changes"]) == [("smol:latest", "update-spec"),
                                                                       ("tiny:latest", "create")]
    assert generate(client, "tiny").status_code == 404
    client.post("/api/library/apply", json={"path": str(other)})
    assert generate(client, "tiny").json()["eval_count"] == 2
    assert generate(client).json()["eval_count"] == 9


def test_cli_library_status_and_apply(served, tmp_path, smollm2_gguf):
    import subprocess
    import sys

    library, client, live = served
    env = {**__import__("os").environ, "CORRAL_HOST": live.url}
    (library / "smol.Modelfile").write_text(SMOL.format(n=3, ctx=512) + "PARAMETER temprature 1\n")
    until(lambda: library_entry(client).get("state") == "error")
    status = subprocess.run([sys.executable, "-m", "corral.cli.main", "library", "status"], env=env,
                            capture_output=True, text=True)
    assert status.returncode == 1 and "smol:latest" in status.stdout and "smol.Modelfile:5:11: unknown parameter" in status.stdout
    other = tmp_path / "other"
    other.mkdir()
    (other / "smol.gguf").symlink_to(smollm2_gguf)
    # Bounded: with no num_predict a sampled generation may run to the 10 x num_ctx cap, minutes on CI.
    (other / "tiny.toml").write_text('from = "./smol.gguf"\n[parameters]\nnum_predict = 4\n')
    dry = subprocess.run([sys.executable, "-m", "corral.cli.main", "apply", str(other), "--dry-run"], env=env,
                         capture_output=True, text=True)
    assert dry.returncode == 0 and "create" in dry.stdout and "delete" in dry.stdout and "tiny:latest" in dry.stdout
    assert generate(client, "tiny").status_code == 404
    done = subprocess.run([sys.executable, "-m", "corral.cli.main", "apply", str(other)], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "applied 2 change(s)" in done.stdout
    assert generate(client, "tiny").status_code == 200
