"""A split GGUF on a fake Hugging Face: pulled whole through the file API (the registry route
refuses shards), every shard verified, stored as one model layer per shard, compiled as one
model, and loaded and run by the real engine."""

from __future__ import annotations

import asyncio

import pytest

from corral.compiler.errors import GGUFError
from corral.compiler.gguf.info import read_model_info, read_split_info
from corral.engine.process import Engine
from corral.engine.requests import Chunk, Final, GenerateRequest, Sampling
from corral.registry import pull
from corral.registry.errors import ManifestRejectedError
from corral.sources.stored import Models
from corral.store.errors import DigestMismatchError
from corral.store.store import Store
from tests.ggufs import write_tiny_llama, write_tiny_llama_split
from tests.registry.conftest import CPU, SMALL, files_under
from tests.registry.fake_hf import FakeHuggingFace
from tests.registry.hostile import MODEL, HostileRegistry, digest_of

SHARDS = [f"Tiny-Q4_K_M-{k:05d}-of-00003.gguf" for k in (1, 2, 3)]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """The three shards of a tiny model (bytes, in order), and the same model in one file."""
    folder = tmp_path_factory.mktemp("hf-split")
    shards = write_tiny_llama_split(folder / "Tiny-Q4_K_M.gguf", shards=3, seed=7)
    assert [p.name for p in shards] == SHARDS
    return [p.read_bytes() for p in shards], write_tiny_llama(folder / "whole.gguf", seed=7)


@pytest.fixture
def hub(split):
    shards, _ = split
    with HostileRegistry() as cdn, FakeHuggingFace(cdn) as fake:
        fake.add_repo("owner/Split-GGUF", dict(zip(SHARDS, shards)) | {"README.md": b"# Split"})
        yield fake


def hf_pull(store, name, hub, **kwargs):
    return pull(store, name, hf_endpoint=hub.url, options=SMALL, **kwargs)


def stored_blobs(store: Store) -> list[str]:
    return sorted(p.name for p in store.blobs_dir.iterdir()) if store.blobs_dir.exists() else []


def test_a_split_quant_is_pulled_whole_one_model_layer_per_shard(hub, split, tmp_path):
    shards, _ = split
    store = Store(tmp_path / "models")
    events = []
    result = hf_pull(store, "hf.co/owner/Split-GGUF:Q4_K_M", hub, progress=events.append)
    assert hub.seen("/v2/owner/Split-GGUF/manifests/Q4_K_M")  # the route was asked, and refused the shards
    layers = result.manifest.layers_of(MODEL)
    assert [str(layer.digest) for layer in layers] == [digest_of(data) for data in shards]  # in shard order
    assert [layer.size for layer in layers] == [len(data) for data in shards]
    assert [store.blob_path(layer.digest).read_bytes() for layer in layers] == shards
    assert {e.digest for e in events if e.status.startswith("pulling ") and e.digest} == {digest_of(d) for d in shards}
    reads = {s.path.rsplit("/", 1)[-1] for s in hub.cdn.seen("/storage/")}
    assert reads == {digest_of(data) for data in shards}
    assert result.downloaded == sum(len(d) for d in shards)
    # A tag naming one shard exactly names the model: the same set, the same order.
    again = hf_pull(store, f"hf.co/owner/Split-GGUF:{SHARDS[1]}", hub)
    assert again.manifest.layers == result.manifest.layers and again.downloaded == 0


def test_a_pulled_split_model_compiles_as_one_model(hub, split, tmp_path):
    shards, whole = split
    store = Store(tmp_path / "models")
    layers = hf_pull(store, "hf.co/owner/Split-GGUF:Q4_K_M", hub).manifest.layers_of(MODEL)
    spec = Models(store, CPU).spec("hf.co/owner/Split-GGUF:Q4_K_M")
    assert [w.path for w in spec.weight_files] == [str(store.blob_path(layer.digest)) for layer in layers]
    assert [w.size for w in spec.weight_files] == [len(d) for d in shards]
    # The model all the shards make is the one-file model: tensors, sizes, shape and plan.
    info, one = read_split_info([store.blob_path(layer.digest) for layer in layers]), read_model_info(whole)
    assert len(info.tensors) == len(one.tensors) == 21
    assert {t.name for t in info.tensors} == {t.name for t in one.tensors}
    assert (info.layer_bytes, info.input_bytes, info.output_bytes) == (one.layer_bytes, one.input_bytes, one.output_bytes)
    assert info.parameter_count == one.parameter_count and info.weights_bytes == one.weights_bytes
    assert info.file_size == sum(len(d) for d in shards)
    assert spec.plan.weights_bytes == one.weights_bytes
    assert spec.model.block_count == 2 and spec.model.architecture == "llama"
    assert spec.load_digest != spec.model_copy(update={"splits": spec.splits[:1]}).load_digest


def test_a_wrong_sha256_on_one_shard_leaves_nothing_in_the_store(hub, split, tmp_path):
    shards, _ = split
    hub.add_repo("owner/Liar-GGUF", dict(zip(SHARDS, shards)), lie_about={SHARDS[1]})
    store = Store(tmp_path / "models")
    with pytest.raises(DigestMismatchError):
        hf_pull(store, "hf.co/owner/Liar-GGUF:Q4_K_M", hub)
    # No blob (shard 1 was verified, and left again with its set) and no manifest. Shard 3 was
    # downloaded but not yet committed: its partial file stays for the next pull to resume, as
    # any pull's partial files do (prune removes them after a week).
    assert [b for b in stored_blobs(store) if not b.endswith(("-partial", "-partial.json"))] == []
    assert not any(b.startswith(digest_of(shards[1]).replace(":", "-")) for b in stored_blobs(store))
    assert not (store.root / "manifests").exists()


def test_shards_in_the_wrong_order_never_become_a_model(hub, split, tmp_path):
    shards, _ = split
    hub.add_repo("owner/Mixed-GGUF", dict(zip(SHARDS, [shards[0], shards[2], shards[1]])))
    store = Store(tmp_path / "models")
    with pytest.raises(GGUFError, match="shard 2 of 3 .* says it is shard 3 of 3"):
        hf_pull(store, "hf.co/owner/Mixed-GGUF:Q4_K_M", hub)
    assert stored_blobs(store) == [] and not (store.root / "manifests").exists()


def test_a_split_set_missing_a_shard_is_refused_before_any_download(hub, split, tmp_path):
    shards, _ = split
    hub.add_repo("owner/Gap-GGUF", {SHARDS[0]: shards[0], SHARDS[2]: shards[2]})
    store = Store(tmp_path / "models")
    with pytest.raises(ManifestRejectedError, match="lacks Tiny-Q4_K_M-00002-of-00003.gguf"):
        hf_pull(store, "hf.co/owner/Gap-GGUF:Q4_K_M", hub)
    assert hub.cdn.seen("/storage/") == [] and files_under(store.root) <= {"blobs"}


def test_a_pulled_split_model_loads_in_the_engine_and_generates(hub, tmp_path):
    store = Store(tmp_path / "models")
    hf_pull(store, "hf.co/owner/Split-GGUF:Q4_K_M", hub)
    spec = Models(store, CPU).spec("hf.co/owner/Split-GGUF:Q4_K_M")
    assert len(spec.splits) == 2

    async def run() -> tuple[int, Final]:
        engine = Engine(spec)
        await engine.start()
        try:
            chunks, final = 0, None
            request = GenerateRequest("split", "hello world", Sampling(temperature=0.0, num_predict=6))
            async for message in engine.generate(request):
                if isinstance(message, Chunk):
                    chunks += 1
                else:
                    final = message
            assert isinstance(final, Final)
            return chunks, final
        finally:
            await engine.close()

    chunks, final = asyncio.run(run())
    # Random weights: the text is noise, but llama.cpp ran all three shards as one model.
    assert final.prompt_eval_count > 0
    assert final.eval_count > 0 and (final.done_reason == "length") == (final.eval_count == 6)
