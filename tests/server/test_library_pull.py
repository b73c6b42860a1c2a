"""A served library whose definitions name registry models: pulled in the background by a real server.

The server runs on loopback with its own settings (store, library); the registries are the real
docker-registry of tests/registry and, where a download must be held halfway to be seen, the
hostile one.
"""

from __future__ import annotations


import httpx
import pytest

from corral.cli.main import main
from corral.config.settings import Settings
from corral.registry import push
from corral.server.app import create_app
from corral.store.store import Store
from tests.ggufs import write_tiny_llama
from tests.registry.conftest import SMALL, docker_registry, make_model  # noqa: F401 (a fixture)
from tests.registry.hostile import stalling_at_half
from tests.server.live import LiveServer
from tests.waiting import until


def library_entry(client: httpx.Client, name: str = "m:latest") -> dict:
    models = client.get("/api/library").json()["models"]
    return next((m for m in models if m["name"] == name), {})


def serve(tmp_path, library):
    app = create_app(Settings(models=tmp_path / "models", library=library, num_parallel=1),
                     name=f"corral_pull_{tmp_path.name[-8:]}".replace("-", "_"))
    return LiveServer(app)


def test_api_and_cli_show_the_pull_with_its_progress_then_ok(tmp_path, monkeypatch, capsys):
    weights = write_tiny_llama(tmp_path / "tiny.gguf").read_bytes()
    library = tmp_path / "library"
    library.mkdir()
    with stalling_at_half(weights) as registry:
        (library / "m.Modelfile").write_text(f"FROM {registry.host}/ns/m:1\n")
        with serve(tmp_path, library) as live, httpx.Client(base_url=live.url, timeout=60) as client:
            assert registry.stalled.wait(30)
            held = until(lambda: (e := library_entry(client)).get("pull") and e["pull"]["completed"] and e)
            assert held["state"] == "pulling" and held["digest"] is None
            assert held["pull"]["model"] == f"{registry.host}/ns/m:1"
            assert held["pull"]["total"] == len(weights) and 0 < held["pull"]["percent"] < 100
            monkeypatch.setenv("CORRAL_HOST", f"127.0.0.1:{live.port}")
            main(["library", "status"])
            assert f"pulling {held['pull']['percent']}%" in capsys.readouterr().out
            assert client.post("/api/generate", json={"model": "m", "prompt": "x"}).status_code == 404
            registry.release.set()
            done = until(lambda: (e := library_entry(client)).get("state") == "ok" and e)
            assert done["pull"] is None and done["digest"]
            assert "m:latest" in [m["name"] for m in client.get("/api/tags").json()["models"]]


def test_shutdown_cancels_a_running_pull(tmp_path):
    weights = write_tiny_llama(tmp_path / "tiny.gguf").read_bytes()
    library = tmp_path / "library"
    library.mkdir()
    with stalling_at_half(weights) as registry:
        (library / "m.Modelfile").write_text(f"FROM {registry.host}/ns/m:1\n")
        with serve(tmp_path, library):
            assert registry.stalled.wait(30)
        # The server stopped while the registry still held the read open: the pull's thread is gone.
        import threading

        assert not [t for t in threading.enumerate() if t.name.startswith("pull ") and t.is_alive()]
        assert list(Store(tmp_path / "models").blobs_dir.glob("sha256-*-partial"))


def test_apply_dry_run_lists_the_download_with_its_size(docker_registry, tmp_path, monkeypatch, capsys):
    source = Store(tmp_path / "source")
    name = f"{docker_registry.host}/ns/dry:1"
    make_model(source, name, tmp_path / "defs")
    push(source, name, insecure=True, options=SMALL)
    size = sum(layer.size for layer in source.read_manifest(name).all_layers())
    served, proposed = tmp_path / "served", tmp_path / "proposed"
    served.mkdir()
    proposed.mkdir()
    (proposed / "m.Modelfile").write_text(f"FROM {name}\n")
    with serve(tmp_path, served) as live, httpx.Client(base_url=live.url, timeout=60) as client:
        plan = client.post("/api/library/apply", json={"path": str(proposed), "dry_run": True}).json()
        [change] = plan["changes"]
        assert change["action"] == "pull" and change["download"] == {
            "model": name, "bytes": size, "layers": 5, "error": None}
        monkeypatch.setenv("CORRAL_HOST", f"127.0.0.1:{live.port}")
        main(["apply", str(proposed), "--dry-run"])
        out = capsys.readouterr().out
        assert "pull base" in out and f"FROM {name}: would download" in out and "to download:" in out
        assert not Store(tmp_path / "models").list_models()  # a dry run downloads nothing


@pytest.mark.model
def test_smollm2_from_a_registry_answers_after_the_background_pull(docker_registry, tmp_path, smollm2_gguf):
    source = Store(tmp_path / "source")
    name = f"{docker_registry.host}/team/smol:1"
    make_model(source, name, tmp_path / "defs", weights=smollm2_gguf)
    push(source, name, insecure=True)
    library = tmp_path / "library"
    library.mkdir()
    (library / "smol.Modelfile").write_text(f"FROM {name}\nPARAMETER temperature 0\nPARAMETER num_predict 3\n")
    with serve(tmp_path, library) as live, httpx.Client(base_url=live.url, timeout=600) as client:
        assert until(lambda: library_entry(client, "smol:latest").get("state") == "ok", 300)
        r = client.post("/api/generate", json={"model": "smol", "prompt": "Count: 1, 2, 3,", "stream": False})
        assert r.status_code == 200 and r.json()["eval_count"] == 3 and r.json()["response"]
