"""Push to and pull from a real registry (the CNCF distribution registry) on loopback."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from corral.registry import pull, push
from corral.registry.download import TransferOptions
from corral.registry.errors import ManifestNotFoundError
from corral.registry.events import ProgressEvent
from corral.sources.stored import Models
from corral.store.errors import ModelNotFoundError
from corral.store.names import parse
from corral.store.store import Store
from tests.registry.conftest import CPU, SMALL, make_model


def manifest_file(store: Store, name: str) -> bytes:
    return store.manifests_dir.joinpath(*parse(name).filepath_parts()).read_bytes()


def statuses(events: list[ProgressEvent]) -> list[str]:
    """The statuses in order, each run of one status once."""
    out: list[str] = []
    for e in events:
        if not out or out[-1] != e.status:
            out.append(e.status)
    return out


@pytest.fixture
def pushed(docker_registry, tmp_path, request):
    """A tiny model created in one store and pushed to the registry under a name of its own."""
    source = Store(tmp_path / "source")
    make_model(source, "tiny", tmp_path / "defs")
    name = f"{docker_registry.host}/library/{request.node.name.replace('_', '-')[:60].strip('-')}:v1"
    source.copy("tiny", name)
    return source, name


def test_a_pushed_model_pulls_back_to_identical_bytes(pushed, tmp_path):
    source, name = pushed
    events: list[ProgressEvent] = []
    result = push(source, name, insecure=True, options=SMALL, progress=events.append)
    layers = source.read_manifest(name).all_layers()
    assert result.skipped == 0 and result.uploaded == sum(layer.size for layer in layers)
    assert statuses(events) == ["retrieving manifest", *(f"pushing {layer.digest.short}" for layer in layers),
                                "pushing manifest", "success"]
    target = Store(tmp_path / "target")
    events = []
    pulled = pull(target, name, insecure=True, options=SMALL, progress=events.append)
    assert statuses(events) == ["pulling manifest", *(f"pulling {layer.digest.short}" for layer in layers),
                                "verifying sha256 digest", "writing manifest", "success"]
    last = {e.digest: e for e in events if e.digest}
    assert all(last[str(layer.digest)].completed == layer.size for layer in layers)
    assert manifest_file(target, name) == manifest_file(source, name)
    assert pulled.digest == hashlib.sha256(manifest_file(source, name)).hexdigest() == result.digest
    for layer in layers:
        assert target.blob_path(layer.digest).read_bytes() == source.blob_path(layer.digest).read_bytes()
    assert Models(target, CPU).spec(name).weights.path == str(target.blob_path(layers[0].digest))


def test_a_second_push_skips_every_blob_the_registry_has(pushed):
    source, name = pushed
    push(source, name, insecure=True, options=SMALL)
    again = push(source, name, insecure=True, options=SMALL)
    assert again.uploaded == 0 and again.skipped == len(source.read_manifest(name).all_layers())


def test_a_small_blob_goes_in_one_put_and_pulls_in_one_part(pushed, tmp_path):
    source, name = pushed
    whole = TransferOptions(retry_delay=0.01, timeout=10)  # 64 MiB chunks and parts: one of each
    push(source, name, insecure=True, options=whole)
    target = Store(tmp_path / "target")
    pull(target, name, insecure=True, options=whole)
    assert manifest_file(target, name) == manifest_file(source, name)


def test_the_default_host_can_be_served_by_a_mirror(pushed, docker_registry, tmp_path):
    source, name = pushed
    push(source, name, insecure=True, options=SMALL)
    short = parse(name).model + ":v1"  # library/<model>:v1 on Ollama's host, served by the mirror
    target = Store(tmp_path / "target")
    result = pull(target, short, insecure=True, registry=docker_registry.host, options=SMALL)
    assert str(result.name) == f"registry.ollama.ai/library/{short}"
    assert target.read_manifest(short) == source.read_manifest(name)


def test_a_model_the_registry_lacks_is_a_clear_error(docker_registry, tmp_path):
    with pytest.raises(ManifestNotFoundError, match="^pull model manifest: file does not exist$"):
        pull(Store(tmp_path / "s"), f"{docker_registry.host}/library/absent:v1", insecure=True, options=SMALL)


def test_pushing_a_model_the_store_lacks_is_a_clear_error(docker_registry, tmp_path):
    with pytest.raises(ModelNotFoundError):
        push(Store(tmp_path / "s"), f"{docker_registry.host}/library/absent:v1", insecure=True)


@pytest.mark.model
def test_a_real_model_pushed_and_pulled_back_runs(docker_registry, smollm2_gguf: Path, tmp_path):
    source = Store(tmp_path / "source")
    make_model(source, "smollm2", tmp_path / "defs", weights=smollm2_gguf)
    name = f"{docker_registry.host}/library/smollm2:135m"
    source.copy("smollm2", name)
    push(source, name, insecure=True)  # the default chunk size: the weights go in PATCH chunks
    target = Store(tmp_path / "target")
    pull(target, name, insecure=True)  # the default part sizes
    assert manifest_file(target, name) == manifest_file(source, name)
    spec = Models(target, CPU).spec(name)
    assert hashlib.sha256(Path(spec.weights.path).read_bytes()).hexdigest() == \
        hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()
    from llama_cpp import Llama

    llm = Llama(model_path=spec.weights.path, n_ctx=128, n_threads=2, verbose=False)
    out = llm("The capital of France is", max_tokens=4, temperature=0)
    assert out["choices"][0]["text"].strip()
