"""A push whose PATCH is dropped part-way asks the registry what it holds and goes on from there."""

from __future__ import annotations

import os

from corral.registry import pull, push
from corral.store.manifest import Layer, Manifest, MediaType
from corral.store.store import Store
from tests.registry.conftest import SMALL
from tests.registry.hostile import HostileRegistry, digest_of

WEIGHTS = os.urandom(600_000)  # five PATCH chunks of SMALL.upload_chunk (128 KiB)
DROP_AT = 300_000  # inside the third chunk, off any chunk boundary
CONFIG = b'{"model_format":"gguf"}'


def test_a_dropped_patch_resumes_from_the_offset_the_registry_holds(tmp_path):
    source = Store(tmp_path / "source")
    weights, config = source.put_blob_bytes(WEIGHTS), source.put_blob_bytes(CONFIG)
    manifest = Manifest(config=Layer(media_type=MediaType.CONFIG.value, digest=config, size=len(CONFIG)),
                        layers=(Layer(media_type=MediaType.MODEL.value, digest=weights, size=len(WEIGHTS)),))
    with HostileRegistry() as registry:
        name = f"{registry.host}/library/m:v1"
        source.write_manifest(name, manifest)
        registry.behaviour.patch_drop_at = DROP_AT
        result = push(source, name, insecure=True, options=SMALL)
        assert registry.behaviour.patch_drop_at is None  # the drop happened
        assert result.uploaded == len(WEIGHTS) + len(CONFIG)
        assert registry.blobs[digest_of(WEIGHTS)] == WEIGHTS  # whole, in order, nothing twice
        # After the drop the client asked where the session stood, and sent on from exactly there.
        status = [s for s in registry.requests if s.method == "GET" and "/blobs/uploads/" in s.path]
        assert len(status) == 1
        patches = [s.headers["Content-Range"] for s in registry.requests if s.method == "PATCH"]
        dropped = patches.index(f"{2 * SMALL.upload_chunk}-{3 * SMALL.upload_chunk - 1}")
        assert patches[dropped + 1].startswith(f"{DROP_AT}-")
        assert registry.manifests["library/m:v1"] == manifest.to_bytes()
        pulled = Store(tmp_path / "pulled")
        pull(pulled, name, insecure=True, options=SMALL)
        assert pulled.blob_path(weights).read_bytes() == WEIGHTS
