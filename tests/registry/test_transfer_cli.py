"""`corral push`, `corral pull`, and the pull `corral run` and `corral create` do for a missing model:
the real console script in sealed subprocesses, against the real docker-registry on loopback.

Without a server the commands work on their own store; with `corral serve` on CORRAL_HOST they go
through its /api/pull. The SmolLM2 tests push a real model, pull it into empty stores and run it.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
from pathlib import Path

import pytest

from corral.store.names import parse
from corral.store.store import Store
from tests.cli.test_run_cli import corral, corral_script
from tests.registry.conftest import make_model
from tests.sealed import free_port, sealed_environment
from tests.serving import corral_serve

model = pytest.mark.model  # the tests that run SmolLM2
QUESTION = "What is the capital of France?"
LAYER_LINE = re.compile(r"^pulling [0-9a-f]{12}: (\d+)% \(.+/.+\)$")


def environment(root: Path, **extra: str) -> dict[str, str]:
    """A sealed environment of its own (store under `root`), no server at CORRAL_HOST."""
    env = sealed_environment(root)
    env.update(extra)
    return env


def manifest_file(store: Store, name: str) -> bytes:
    return store.manifests_dir.joinpath(*parse(name).filepath_parts()).read_bytes()


@pytest.fixture
def pushed(docker_registry, tmp_path, request) -> tuple[Store, str]:
    """A tiny model created in a store of its own and pushed with `corral push`."""
    env = environment(tmp_path / "source")
    source = Store(Path(env["CORRAL_MODELS"]))
    name = f"{docker_registry.host}/library/{request.node.name.replace('_', '-')[:50].strip('-')}:v1"
    make_model(source, name, tmp_path / "defs")
    done = corral(env, "push", name, "--insecure")
    assert done.returncode == 0, done.stderr
    statuses = done.stderr.splitlines()
    assert statuses[0] == "retrieving manifest" and statuses[-2:] == ["pushing manifest", "success"]
    return source, name


def test_pull_into_an_empty_store_prints_plain_lines(pushed, tmp_path):
    source, name = pushed
    env = environment(tmp_path / "target")
    done = corral(env, "pull", name, "--insecure")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    layers = source.read_manifest(name).all_layers()
    assert lines[0] == "pulling manifest" and lines[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layer_lines = lines[1:-3]
    assert all(LAYER_LINE.match(line) for line in layer_lines), layer_lines
    assert [line.split(":")[0] for line in layer_lines if LAYER_LINE.match(line)[1] == "100"] == [
        f"pulling {layer.digest.short}" for layer in layers]
    for layer in layers:  # rising tenths, each once
        percents = [int(LAYER_LINE.match(line)[1]) for line in layer_lines if layer.digest.short in line]
        assert percents == sorted(set(percents)) and percents[-1] == 100
    assert manifest_file(Store(Path(env["CORRAL_MODELS"])), name) == manifest_file(source, name)
    listed = corral(env, "list")
    assert parse(name).display_shortest() in listed.stdout


def test_pull_on_a_terminal_draws_a_bar_per_layer(pushed, tmp_path):
    source, name = pushed
    env = environment(tmp_path / "target")
    master, slave = pty.openpty()
    proc = subprocess.Popen([corral_script(), "pull", name, "--insecure"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the command ended and closed the terminal
            break
        if not data:
            break
        out += data
    assert proc.wait(60) == 0
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode(errors="replace"))
    for layer in source.read_manifest(name).all_layers():
        assert f"pulling {layer.digest.short}" in text
    assert "100%" in text and "pulling manifest" in text and text.rstrip().endswith("success")


def test_a_missing_model_is_ollamas_error_and_a_failed_exit(docker_registry, tmp_path):
    env = environment(tmp_path / "target")
    done = corral(env, "pull", f"{docker_registry.host}/library/not-there:v1", "--insecure")
    assert done.returncode == 1
    assert done.stderr.splitlines()[:2] == ["pulling manifest", "error: pull model manifest: file does not exist"]
    done = corral(env, "push", f"{docker_registry.host}/library/not-there:v1", "--insecure")
    assert done.returncode == 1
    assert f"error: model '{docker_registry.host}/library/not-there:v1' not found" in done.stderr


def test_plain_http_needs_insecure(pushed, tmp_path):
    _source, name = pushed
    done = corral(environment(tmp_path / "target"), "pull", f"http://{name}")
    assert done.returncode == 1
    assert done.stderr.startswith("error: insecure protocol http")
    assert "--insecure" in done.stderr


def test_create_pulls_a_from_model_the_store_lacks(pushed, tmp_path, docker_registry):
    _source, name = pushed
    env = environment(tmp_path / "target", CORRAL_REGISTRY=docker_registry.host)
    short = name.split("/", 1)[1]  # library/<model>:v1 on the default host: CORRAL_REGISTRY serves it
    (tmp_path / "Modelfile").write_text(f"FROM {short}\nSYSTEM Be very brief.\n")
    done = corral(env, "create", "mine", "-f", str(tmp_path / "Modelfile"), "--insecure")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == "pulling manifest" and "writing manifest" in done.stderr, done.stderr
    assert "created mine:latest" in done.stdout
    target = Store(Path(env["CORRAL_MODELS"]))
    assert target.has_model("mine") and target.has_model(short)


# -- a real model: push, pull into empty stores, run -------------------------------------------------

@pytest.fixture(scope="module")
def smol_pushed(docker_registry, tmp_path_factory, smollm2_gguf) -> str:
    """SmolLM2, created as `smol` and pushed with `corral push` as HOST/library/smol-pushed:v1."""
    root = tmp_path_factory.mktemp("smol-source")
    env = environment(root)
    (root / "Modelfile").write_text(f"FROM {smollm2_gguf}\nSYSTEM You are concise.\nPARAMETER temperature 0\n")
    name = f"{docker_registry.host}/library/smol-pushed:v1"
    for args in (["create", name, "-f", str(root / "Modelfile")], ["push", name, "--insecure"]):
        done = corral(env, *args)
        assert done.returncode == 0, done.stderr
    return name


@model
def test_a_pushed_model_pulls_into_an_empty_store_and_runs(smol_pushed, tmp_path):
    env = environment(tmp_path)
    pulled = corral(env, "pull", smol_pushed, "--insecure")
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stderr.splitlines()[-1] == "success"
    done = corral(env, "run", smol_pushed, QUESTION)
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout
    assert "pulling" not in done.stderr  # it was there already


@model
def test_run_pulls_a_model_only_the_registry_has_then_answers(smol_pushed, tmp_path, docker_registry):
    env = environment(tmp_path, CORRAL_REGISTRY=docker_registry.host)
    done = corral(env, "run", "smol-pushed:v1", QUESTION, "--insecure")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == "pulling manifest" and "success" in done.stderr.splitlines()
    assert "Paris" in done.stdout
    assert Store(Path(env["CORRAL_MODELS"])).has_model("smol-pushed:v1")


@model
def test_run_through_a_server_pulls_into_the_servers_store(smol_pushed, tmp_path, docker_registry):
    served = environment(tmp_path / "server", CORRAL_HOST=f"127.0.0.1:{free_port()}",
                         CORRAL_REGISTRY=docker_registry.host)
    with corral_serve(corral_script(), served, tmp_path / "serve.log"):
        elsewhere = {**served, "CORRAL_MODELS": str(tmp_path / "empty-store"), "CORRAL_REGISTRY": "127.0.0.1:9"}
        done = corral(elsewhere, "run", "smol-pushed:v1", QUESTION, "--insecure")
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines()[0] == "pulling manifest" and "success" in done.stderr.splitlines()
        assert "Paris" in done.stdout
        assert Store(Path(served["CORRAL_MODELS"])).has_model("smol-pushed:v1")
        assert not (tmp_path / "empty-store").exists()  # the server pulled (with its own CORRAL_REGISTRY)
        missing = corral(elsewhere, "run", "not-there", QUESTION, "--insecure")
        assert missing.returncode == 1
        assert missing.stderr.splitlines()[:2] == ["pulling manifest",
                                                   "error: pull model manifest: file does not exist"]
