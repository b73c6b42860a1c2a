"""Library definitions whose FROM names a registry model: pulled in the background, retried, measured.

The registries are real servers on loopback: Debian's docker-registry, and the hostile registry
of tests/registry where a test must hold a download halfway (to see its progress, to cancel it).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from corral.registry import push
from corral.registry.download import TransferOptions
from corral.sources.bases import Bases, plain_http
from corral.sources.library import Library
from corral.store.create import StoreResolver
from corral.store.store import Store
from tests.ggufs import write_tiny_llama
from tests.registry.conftest import CPU, SMALL, docker_registry, make_model  # noqa: F401 (a fixture)
from tests.registry.hostile import MODEL, HostileRegistry, stalling_at_half
from tests.sealed import free_port
from tests.waiting import until

# One part per blob, so a stalled read holds the whole layer where the test can see it.
ONE_PART = TransferOptions(min_part_size=1 << 30, parallel=1, retries=3, retry_delay=0.01, timeout=10.0,
                           interval=0.02)


def entry(library: Library, name: str = "m:latest"):
    return next((e for e in library.entries() if e.name == name), None)


def pushed(registry, tmp_path: Path, repo: str, seed: int = 1) -> str:
    """A tiny model pushed to the docker registry as `<host>/<repo>`; returns that name."""
    source = Store(tmp_path / f"source-{seed}")
    name = f"{registry.host}/{repo}"
    make_model(source, name, tmp_path / f"defs-{seed}", seed=seed)
    push(source, name, insecure=True, options=SMALL)
    return name


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "library"
    root.mkdir()
    return root


def library_over(folder: Path, store: Store, **kw) -> Library:
    return Library(folder, CPU, StoreResolver(store), Bases(store, **{"options": SMALL, **kw}))


def test_plain_http_only_for_this_machine_or_when_written():
    assert plain_http("127.0.0.1:5000/ns/m:1") and plain_http("localhost:5000/ns/m")
    assert plain_http("http://example.com/ns/m:1")
    assert not plain_http("example.com/ns/m:1") and not plain_http("llama3.2:1b")
    assert not plain_http("hf.co/owner/repo:Q4_K_M")
    assert plain_http("llama3.2:1b", registry="127.0.0.1:5000")  # the default host's mirror is here


def test_a_definition_from_a_registry_model_pulls_it_then_serves(docker_registry, tmp_path, folder):
    name = pushed(docker_registry, tmp_path, "ns/tiny:1")
    store = Store(tmp_path / "models")
    (folder / "m.Modelfile").write_text(f"FROM {name}\nSYSTEM from the registry\n")
    library = library_over(folder, store)
    try:
        changes = library.sync()
        assert [(c.name, c.action) for c in changes] == [("m:latest", "pull")]
        assert entry(library).state in ("pulling", "ok")
        assert until(lambda: entry(library).state == "ok")
        spec = library.spec("m")
        assert spec.system == "from the registry" and entry(library).pull is None
        assert store.read_manifest(name) is not None  # the base is in the store, for the next start too
    finally:
        library.close()


def test_progress_shows_while_the_base_downloads(tmp_path, folder):
    weights = write_tiny_llama(tmp_path / "tiny.gguf").read_bytes()
    with stalling_at_half(weights) as registry:
        store = Store(tmp_path / "models")
        (folder / "m.Modelfile").write_text(f"FROM {registry.host}/ns/m:1\n")
        library = library_over(folder, store, options=ONE_PART)
        try:
            library.sync()
            assert registry.stalled.wait(30)
            half = until(lambda: (e := entry(library)).pull and e.pull.completed == len(weights) // 2 and e)
            assert half.state == "pulling" and half.spec is None
            assert half.pull.total == len(weights) and 0 < half.pull.percent < 100
            registry.release.set()
            assert until(lambda: entry(library).state == "ok")
        finally:
            library.close()


def test_closing_cancels_a_running_pull_and_keeps_what_it_downloaded(tmp_path, folder):
    weights = write_tiny_llama(tmp_path / "tiny.gguf").read_bytes()
    with stalling_at_half(weights) as registry:
        store = Store(tmp_path / "models")
        (folder / "m.Modelfile").write_text(f"FROM {registry.host}/ns/m:1\n")
        library = library_over(folder, store, options=ONE_PART)
        library.sync()
        assert registry.stalled.wait(30)
        library.close()  # the registry still holds the read open: the cancel must hang it up
        assert not [t for t in threading.enumerate() if t.name.startswith("pull ") and t.is_alive()]
        assert list(store.blobs_dir.glob("sha256-*-partial"))
        assert not store.list_models()


def test_a_failed_pull_shows_its_error_and_retries_until_it_works(docker_registry, tmp_path, folder):
    name = f"{docker_registry.host}/ns/later:1"
    store = Store(tmp_path / "models")
    (folder / "m.Modelfile").write_text(f"FROM {name}\n")
    library = library_over(folder, store, first_retry=0.2, most_retry=0.5)
    try:
        library.sync()
        failed = until(lambda: (e := entry(library)).state == "error" and e)
        assert failed.pull.retry_at is not None and failed.pull.attempts >= 1
        assert failed.problem.message.startswith(f"pulling {name}: ")
        pushed(docker_registry, tmp_path, "ns/later:1")  # the registry gets the model
        assert until(lambda: entry(library).state == "ok")
        assert entry(library).pull is None
    finally:
        library.close()


def test_an_edit_retries_a_failed_pull_at_once(docker_registry, tmp_path, folder):
    name = f"{docker_registry.host}/ns/edited:1"
    store = Store(tmp_path / "models")
    path = folder / "m.Modelfile"
    path.write_text(f"FROM {name}\n")
    library = library_over(folder, store, first_retry=3600)  # no retry comes by itself within the test
    try:
        library.sync()
        assert until(lambda: entry(library).state == "error")
        pushed(docker_registry, tmp_path, "ns/edited:1")
        path.write_text(f"FROM {name}\nSYSTEM edited\n")
        library.sync()
        assert until(lambda: entry(library).state == "ok")
        assert library.spec("m").system == "edited"
    finally:
        library.close()


def test_the_last_good_version_serves_while_a_changed_from_pulls(tmp_path, folder):
    write_tiny_llama(tmp_path / "local.gguf", seed=3)
    weights = write_tiny_llama(tmp_path / "remote.gguf", seed=4).read_bytes()
    with HostileRegistry() as registry:
        registry.add_model("ns/m:2", [(MODEL, weights)])
        registry.behaviour.stall_after = len(weights) // 3
        store = Store(tmp_path / "models")
        path = folder / "m.Modelfile"
        path.write_text("FROM ../local.gguf\n")
        library = library_over(folder, store, options=ONE_PART)
        try:
            library.sync()
            good = library.spec("m")
            path.write_text(f"FROM {registry.host}/ns/m:2\n")
            assert [c.action for c in library.sync()] == ["pull"]
            assert registry.stalled.wait(30)
            assert entry(library).state == "pulling" and library.spec("m").digest == good.digest
            registry.release.set()
            assert until(lambda: entry(library).state == "ok")
            assert library.spec("m").load_digest != good.load_digest
        finally:
            library.close()


def test_a_dry_run_measures_the_download_and_an_unreachable_registry_is_said(docker_registry, tmp_path, folder):
    name = pushed(docker_registry, tmp_path, "ns/sized:1")
    source = Store(tmp_path / "source-1")
    size = sum(layer.size for layer in source.read_manifest(name).all_layers())
    nowhere = f"127.0.0.1:{free_port()}/ns/gone:1"
    (folder / "a.Modelfile").write_text(f"FROM {name}\n")
    (folder / "b.Modelfile").write_text(f"FROM {nowhere}\n")
    store = Store(tmp_path / "models")
    library = library_over(folder, store)
    try:
        changes, _ = library.plan(measure=True)
        a, b = sorted(changes, key=lambda c: c.name)
        assert a.action == "pull" and a.download.bytes == size and a.download.layers == 5
        assert f"FROM {name}: would download" in a.detail
        assert b.action == "pull" and b.download.bytes is None and b.download.error
        assert "cannot say how much" in b.detail
        assert not store.list_models() and entry(library, "a:latest") is None  # a plan starts no pull
    finally:
        library.close()


def test_without_bases_a_missing_model_is_an_error_as_before(tmp_path, folder):
    (folder / "m.Modelfile").write_text("FROM nosuchmodel:1\n")
    library = Library(folder, CPU, StoreResolver(Store(tmp_path / "models")))
    assert [c.action for c in library.sync()] == ["error"]
    assert entry(library).state == "error" and "not found" in entry(library).problem.message
