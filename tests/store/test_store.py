"""The model store: blobs, manifests, listing, copy, delete and prune, on Ollama's on-disk layout."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.store.errors import (BlobNotFoundError, DigestMismatchError, InvalidDigestError, InvalidManifestError, InvalidNameError, ModelNotFoundError, StoreError)
from corral.store.names import Digest, parse
from corral.store.store import Layer, Manifest, MediaType, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


def files_under(root: Path) -> list[str]:
    """Every file and folder below root, as sorted relative paths: a snapshot to compare."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def make_model(store: Store, name: str, weights: bytes, template: bytes | None = None) -> Manifest:
    """Store a small model the way `create` would: blobs first, then the manifest."""
    config = json.dumps({"model_format": "gguf", "model_family": "llama"}).encode()
    layers = [Layer(media_type=MediaType.MODEL, digest=store.put_blob_bytes(weights), size=len(weights))]
    if template is not None:
        layers.append(Layer(media_type=MediaType.TEMPLATE, digest=store.put_blob_bytes(template), size=len(template)))
    manifest = Manifest(
        config=Layer(media_type=MediaType.CONFIG, digest=store.put_blob_bytes(config), size=len(config)),
        layers=layers,
    )
    store.write_manifest(name, manifest)
    return manifest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- blobs -----------------------------------------------------------------------------------------


def test_put_blob_bytes_stores_under_its_digest(store: Store):
    digest = store.put_blob_bytes(b"hello")
    assert str(digest) == f"sha256:{sha(b'hello')}"
    path = store.blob_path(digest)
    assert path == store.root / "blobs" / f"sha256-{sha(b'hello')}"
    assert path.read_bytes() == b"hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert store.has_blob(digest) and store.has_blob(f"sha256-{sha(b'hello')}")
    assert store.put_blob_bytes(b"hello") == digest
    assert files_under(store.root / "blobs") == [digest.file_name]


def test_put_blob_file_reports_progress_over_both_passes(store: Store, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("corral.store.store.CHUNK", 4)
    source = tmp_path / "weights.gguf"
    source.write_bytes(b"0123456789")
    calls: list[tuple[int, int]] = []
    digest = store.put_blob_file(source, progress=lambda done, total: calls.append((done, total)))
    assert digest == Digest.of_bytes(b"0123456789")
    assert store.blob_path(digest).read_bytes() == b"0123456789"
    assert calls == [(0, 20), (4, 20), (8, 20), (10, 20), (14, 20), (18, 20), (20, 20)]
    # Already stored: one hashing pass, no copy, and the bar jumps to the end.
    calls.clear()
    assert store.put_blob_file(source, progress=lambda done, total: calls.append((done, total))) == digest
    assert calls == [(0, 20), (4, 20), (8, 20), (10, 20), (20, 20)]
    assert files_under(store.root / "blobs") == [digest.file_name]


def test_put_blob_file_catches_a_file_changed_while_copying(store: Store, tmp_path: Path):
    source = tmp_path / "weights.gguf"
    source.write_bytes(b"original")

    def rewrite_after_hashing(done: int, total: int) -> None:
        if done == total // 2:  # the hashing pass has just finished
            source.write_bytes(b"tampered")

    with pytest.raises(DigestMismatchError) as info:
        store.put_blob_file(source, progress=rewrite_after_hashing)
    assert info.value.expected == f"sha256:{sha(b'original')}"
    assert info.value.got == f"sha256:{sha(b'tampered')}"
    assert files_under(store.root / "blobs") == []


def test_put_blob_stream_verifies_as_it_writes(store: Store):
    data = b"a" * 1000
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    assert store.put_blob_stream(chunks, f"sha256-{sha(data).upper()}") == Digest.of_bytes(data)
    assert store.blob_path(Digest.of_bytes(data)).read_bytes() == data


def test_put_blob_stream_mismatch_leaves_nothing_behind(store: Store):
    make_model(store, "keep", b"weights")
    before = files_under(store.root)
    wrong = f"sha256:{'0' * 64}"
    with pytest.raises(DigestMismatchError) as info:
        store.put_blob_stream([b"some ", b"bytes"], wrong)
    assert str(info.value) == f'digest mismatch, expected "{wrong}", got "sha256:{sha(b"some bytes")}"'
    assert files_under(store.root) == before


def test_put_blob_stream_interrupted_leaves_nothing_behind(store: Store):
    def broken():
        yield b"part one"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.put_blob_stream(broken(), f"sha256:{'0' * 64}")
    assert files_under(store.root / "blobs") == []


def test_put_blob_stream_skips_a_blob_already_stored(store: Store):
    digest = store.put_blob_bytes(b"present")

    def must_not_be_read():
        raise AssertionError("the body was read")
        yield b""

    assert store.put_blob_stream(must_not_be_read(), digest) == digest


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 32, "../../etc/passwd", f"sha256:{'0' * 64}/x"])
def test_blob_operations_reject_bad_digests(store: Store, bad: str):
    with pytest.raises(InvalidDigestError):
        store.blob_path(bad)
    with pytest.raises(InvalidDigestError):
        store.put_blob_stream([b""], bad)


def test_blob_path_can_require_the_blob(store: Store):
    missing = f"sha256:{'0' * 64}"
    assert store.blob_path(missing).name == f"sha256-{'0' * 64}"
    with pytest.raises(BlobNotFoundError) as info:
        store.blob_path(missing, must_exist=True)
    assert str(info.value) == f'blob "{missing}" not found'


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=4096), st.lists(st.integers(min_value=1, max_value=512), min_size=1))
def test_any_bytes_in_any_chunking_round_trip(data: bytes, cuts: list[int]):
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        chunks, i = [], 0
        for n in cuts * (len(data) // max(1, sum(cuts)) + 1):
            chunks.append(data[i : i + n])
            i += n
        digest = store.put_blob_stream(chunks, Digest.of_bytes(data))
        assert store.blob_path(digest).read_bytes() == data
        assert store.put_blob_bytes(data) == digest


# -- manifests -------------------------------------------------------------------------------------


def test_manifest_round_trip(store: Store):
    manifest = make_model(store, "llama3.2:1b", b"weights", template=b"{{ .Prompt }}")
    path = store.root / "manifests" / "registry.ollama.ai" / "library" / "llama3.2" / "1b"
    assert path.read_bytes() == manifest.to_bytes()
    assert store.read_manifest("llama3.2:1b") == manifest
    assert store.read_manifest(parse("registry.ollama.ai/library/llama3.2:1b")) == manifest
    assert [l.media_type for l in manifest.layers] == [MediaType.MODEL, MediaType.TEMPLATE]


def test_write_manifest_returns_the_digest_of_its_bytes(store: Store):
    manifest = make_model(store, "m", b"w")
    assert store.write_manifest("m", manifest) == sha(manifest.to_bytes())


@pytest.mark.parametrize(
    "layer_size, error, message",
    [
        (None, BlobNotFoundError, f'blob "sha256:{"0" * 64}" not found'),
        (99, InvalidManifestError, "invalid manifest for 'm': layer sha256:{d} says 99 bytes but the blob holds 1"),
    ],
)
def test_write_manifest_needs_its_blobs_and_changes_nothing_otherwise(store: Store, layer_size, error, message):
    config = store.put_blob_bytes(b"{}")
    before = files_under(store.root)
    digest = f"sha256:{'0' * 64}" if layer_size is None else str(store.put_blob_bytes(b"w"))
    before = files_under(store.root)
    layer = Layer(media_type=MediaType.MODEL, digest=digest, size=layer_size or 1)
    manifest = Manifest(config=Layer(media_type=MediaType.CONFIG, digest=config, size=2), layers=[layer])
    with pytest.raises(error) as info:
        store.write_manifest("m", manifest)
    assert str(info.value) == message.format(d=digest.removeprefix("sha256:"))
    assert files_under(store.root) == before


def test_a_failed_manifest_write_leaves_no_folders(store: Store, monkeypatch):
    manifest = make_model(store, "first", b"w")
    before = files_under(store.root)

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("corral.store.files.os.fsync", full_disk)
    with pytest.raises(OSError):
        store.write_manifest("someone/new:tag", manifest)
    assert files_under(store.root) == before


def test_names_are_found_case_insensitively_and_keep_their_stored_case(store: Store):
    first = make_model(store, "Me/Llama3:Latest", b"one")
    assert store.read_manifest("me/llama3") == first
    assert store.has_model("ME/LLAMA3:LATEST")
    second = make_model(store, "me/LLAMA3:latest", b"two")  # replaces, in place
    assert [e.name for e in store.list_models()] == ["Me/Llama3:Latest"]
    assert store.read_manifest("me/llama3:latest") == second


@pytest.mark.parametrize(
    "name, message",
    [
        ("nope", "model 'nope' not found"),
        (parse("nope"), "model 'nope:latest' not found"),
        ("me/nope:7b", "model 'me/nope:7b' not found"),
    ],
)
def test_missing_models(store: Store, name, message):
    with pytest.raises(ModelNotFoundError) as info:
        store.read_manifest(name)
    assert str(info.value) == message
    assert not store.has_model(name)


@pytest.mark.parametrize("name", ["../x", "a/../../b", "/etc/passwd", "x\\y", "x\x00y", ".."])
def test_escaping_names_never_touch_the_file_system(store: Store, name: str):
    manifest = Manifest(config=Layer(media_type=MediaType.CONFIG, digest=store.put_blob_bytes(b"{}"), size=2))
    before = files_under(store.root)
    for operation in (
        lambda: store.write_manifest(name, manifest),
        lambda: store.read_manifest(name),
        lambda: store.copy("m", name),
        lambda: store.delete(name),
    ):
        with pytest.raises((InvalidNameError, ModelNotFoundError)):
            operation()
    assert files_under(store.root) == before


# -- listing ---------------------------------------------------------------------------------------


def test_list_models_newest_first_with_sizes_and_digests(store: Store):
    assert store.list_models() == []
    make_model(store, "old", b"1" * 10)
    make_model(store, "me/mid:v2", b"2" * 20, template=b"t")
    make_model(store, "example.com/ns/new:x", b"3" * 30)
    for age, path in enumerate(["example.com/ns/new/x", "registry.ollama.ai/me/mid/v2", "registry.ollama.ai/library/old/latest"]):
        os.utime(store.manifests_dir / path, (1_700_000_000 - age * 60, 1_700_000_000 - age * 60))
    config_size = len(json.dumps({"model_format": "gguf", "model_family": "llama"}))
    entries = store.list_models()
    assert [(e.name, e.size) for e in entries] == [
        ("example.com/ns/new:x", 30 + config_size),
        ("me/mid:v2", 21 + config_size),
        ("old:latest", 10 + config_size),
    ]
    for entry in entries:
        path = store.manifests_dir.joinpath(*entry.model_name.filepath_parts())
        assert entry.digest == sha(path.read_bytes())
        assert entry.modified_at.timestamp() == path.stat().st_mtime
    assert store.get("old") == entries[2]


def test_list_models_skips_what_is_not_a_model(store: Store, caplog):
    make_model(store, "good", b"w")
    (store.manifests_dir / "registry.ollama.ai" / "library" / "broken").mkdir()
    (store.manifests_dir / "registry.ollama.ai" / "library" / "broken" / "latest").write_text("{not json")
    (store.manifests_dir / "registry.ollama.ai" / "library" / "-bad").mkdir()
    (store.manifests_dir / "registry.ollama.ai" / "library" / "-bad" / "latest").write_text("{}")
    (store.manifests_dir / "stray-file-too-shallow").write_text("")
    assert [e.name for e in store.list_models()] == ["good:latest"]
    assert "broken" in caplog.text and "-bad" in caplog.text
    with pytest.raises(InvalidManifestError) as info:
        store.read_manifest("broken")
    assert str(info.value).startswith("invalid manifest for 'broken': not JSON")


# -- copy, delete, prune ---------------------------------------------------------------------------


def test_copy_shares_blobs_and_keeps_the_manifest_bytes(store: Store):
    make_model(store, "src", b"w")
    blobs = files_under(store.blobs_dir)
    store.copy("src", "me/dst:v1")
    src, dst = store.get("src"), store.get("me/dst:v1")
    assert (dst.digest, dst.manifest) == (src.digest, src.manifest)
    assert files_under(store.blobs_dir) == blobs
    with pytest.raises(ModelNotFoundError):
        store.copy("absent", "x")
    with pytest.raises(InvalidNameError):
        store.copy("src", "bad name")


def test_delete_removes_only_blobs_no_other_manifest_uses(store: Store):
    a = make_model(store, "a", b"shared weights", template=b"only in a")
    make_model(store, "me/b", b"shared weights")
    only_a = next(l.digest for l in a.layers if l.media_type == MediaType.TEMPLATE)
    assert store.delete("A:LATEST") == [only_a]  # the config and weights are b's too
    assert not store.has_model("a") and store.has_model("me/b")
    assert not store.has_blob(only_a)
    assert all(store.has_blob(l.digest) for l in store.read_manifest("me/b").all_layers())
    assert not (store.manifests_dir / "registry.ollama.ai" / "library").exists()  # empty folders pruned
    removed = store.delete("me/b")
    assert len(removed) == 2
    assert files_under(store.root) == ["blobs", "manifests"]
    with pytest.raises(ModelNotFoundError):
        store.delete("me/b")


def test_delete_keeps_blobs_a_damaged_manifest_may_need(store: Store):
    manifest = make_model(store, "a", b"weights")
    damaged = store.manifests_dir / "registry.ollama.ai" / "library" / "damaged" / "latest"
    damaged.parent.mkdir()
    damaged.write_bytes(manifest.to_bytes()[:-4])  # cut short, but its digests are still legible
    assert store.delete("a") == []
    assert all(store.has_blob(l.digest) for l in manifest.all_layers())


def test_a_damaged_manifest_can_still_be_deleted(store: Store):
    manifest = make_model(store, "a", b"weights")
    (store.manifests_dir / "registry.ollama.ai" / "library" / "a" / "latest").write_text("{damaged")
    assert store.delete("a") == []  # which blobs it used is unknown: prune decides later
    assert not store.has_model("a")
    assert {p.name for p in store.prune()} == {l.digest.file_name for l in manifest.all_layers()}


def test_prune_removes_unreferenced_blobs_leftovers_and_empty_folders(store: Store):
    kept = make_model(store, "kept", b"weights")
    orphan = store.put_blob_bytes(b"orphan")
    abandoned = store.blobs_dir / f"sha256-{'a' * 64}-partial"
    abandoned.write_bytes(b"half a download, untouched for eight days")
    os.utime(abandoned, (time.time() - 8 * 24 * 3600,) * 2)
    (store.blobs_dir / ".corral-tmp-x1").write_bytes(b"an interrupted write")
    (store.manifests_dir / "h" / "n" / "empty").mkdir(parents=True)
    removed = {p.name for p in store.prune()}
    assert removed == {orphan.file_name, f"sha256-{'a' * 64}-partial", ".corral-tmp-x1", "h", "n", "empty"}
    assert files_under(store.blobs_dir) == sorted(l.digest.file_name for l in kept.all_layers())


def test_prune_keeps_a_paused_download_until_it_is_a_week_old(store: Store):
    make_model(store, "kept", b"weights")
    paused = [store.blobs_dir / f"sha256-{'b' * 64}-partial", store.blobs_dir / f"sha256-{'b' * 64}-partial.json"]
    paused[0].write_bytes(b"the first half of a pull")
    paused[1].write_text('{"size": 48, "parts": [[0, 48, 24]]}')
    stale = store.blobs_dir / f"sha256-{'b' * 64}-partial.json.tmp"  # a sidecar write cut short
    stale.write_text("{")
    os.utime(stale, (time.time() - 7200,) * 2)
    assert store.prune() == [stale]  # a startup prune: the download resumes next time
    two_days = time.time() - 2 * 24 * 3600
    for path in paused:
        os.utime(path, (two_days, two_days))
    assert store.prune(grace_seconds=3600) == []
    assert {p.name for p in store.prune(partial_seconds=24 * 3600)} == {p.name for p in paused}


def test_prune_spares_recent_files_within_the_grace_period(store: Store):
    orphan = store.put_blob_bytes(b"just uploaded, manifest not written yet")
    assert store.prune(grace_seconds=3600) == []
    assert store.has_blob(orphan)


# -- an models folder exactly as Ollama writes it --------------------------------------------------

WEIGHTS = b"GGUF" + b"\x00" * 60
TEMPLATE = b"{{ if .System }}<|system|>{{ .System }}{{ end }}"
PARAMS = b'{"stop":["<|eot_id|>"],"temperature":0.7}'
CONFIG = b'{"model_format":"gguf","model_family":"llama","model_families":["llama"],"model_type":"3.2B","file_type":"Q4_K_M","architecture":"amd64","os":"linux"}'


@pytest.fixture
def ollama_folder(tmp_path: Path) -> Path:
    """A models folder written by hand, byte for byte as Ollama's create and pull leave it."""
    root = tmp_path / "ollama-models"
    (root / "blobs").mkdir(parents=True)
    for blob in (WEIGHTS, TEMPLATE, PARAMS, CONFIG):
        (root / "blobs" / f"sha256-{sha(blob)}").write_bytes(blob)
    created = (  # json.Encoder.Encode: compact, '<' and '>' escaped, a final newline
        '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
        f'"config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{sha(CONFIG)}","size":{len(CONFIG)}}},'
        f'"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{sha(WEIGHTS)}","size":{len(WEIGHTS)},"from":"/home/me/\\u003cweights\\u003e.gguf"}},'
        f'{{"mediaType":"application/vnd.ollama.image.template","digest":"sha256:{sha(TEMPLATE)}","size":{len(TEMPLATE)}}},'
        f'{{"mediaType":"application/vnd.ollama.image.params","digest":"sha256:{sha(PARAMS)}","size":{len(PARAMS)}}}]}}\n'
    )
    pulled = json.dumps(  # a registry's bytes, stored as served
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": f"sha256:{sha(CONFIG)}", "size": len(CONFIG)},
            "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{sha(WEIGHTS)}", "size": len(WEIGHTS)}],
        },
        indent=3,
    )
    for rel, text, mtime in [
        ("registry.ollama.ai/library/llama3.2/latest", pulled, 1_700_000_000),
        ("registry.ollama.ai/me/assistant/latest", created, 1_700_000_100),
    ]:
        (root / "manifests" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "manifests" / rel).write_text(text)
        os.utime(root / "manifests" / rel, (mtime, mtime))
    return root


def test_reads_a_folder_written_by_ollama(ollama_folder: Path):
    store = Store(ollama_folder)
    entries = store.list_models()
    assert [(e.name, e.size) for e in entries] == [
        ("me/assistant:latest", len(CONFIG) + len(WEIGHTS) + len(TEMPLATE) + len(PARAMS)),
        ("llama3.2:latest", len(CONFIG) + len(WEIGHTS)),
    ]
    assistant = store.read_manifest("me/assistant")
    assert [l.media_type for l in assistant.layers] == [MediaType.MODEL, MediaType.TEMPLATE, MediaType.PARAMS]
    assert assistant.layers[0].from_ == "/home/me/<weights>.gguf"
    assert store.blob_path(assistant.layers[1].digest).read_bytes() == TEMPLATE
    for entry in entries:
        path = ollama_folder / "manifests" / entry.model_name.host / entry.model_name.namespace / entry.model_name.model / "latest"
        assert entry.digest == sha(path.read_bytes())


def test_writes_manifests_byte_for_byte_as_ollama_does(ollama_folder: Path):
    store = Store(ollama_folder)
    path = ollama_folder / "manifests" / "registry.ollama.ai" / "me" / "assistant" / "latest"
    original = path.read_bytes()
    assert store.read_manifest("me/assistant").to_bytes() == original
    store.write_manifest("me/assistant", store.read_manifest("me/assistant"))
    assert path.read_bytes() == original


def test_deleting_from_an_ollama_folder_keeps_shared_blobs(ollama_folder: Path):
    store = Store(ollama_folder)
    removed = store.delete("me/assistant")
    assert sorted(map(str, removed)) == sorted(f"sha256:{sha(b)}" for b in (TEMPLATE, PARAMS))
    assert store.has_blob(Digest.of_bytes(WEIGHTS)) and store.has_blob(Digest.of_bytes(CONFIG))


# -- manifest JSON ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, json_text",
    [
        ({"mediaType": "m", "digest": f"sha256:{'A' * 64}", "size": 1}, f'{{"mediaType":"m","digest":"sha256:{"a" * 64}","size":1}}'),
        ({"mediaType": "m", "digest": f"sha256-{'a' * 64}", "size": 1, "from": "", "name": ""}, f'{{"mediaType":"m","digest":"sha256:{"a" * 64}","size":1}}'),
        ({"mediaType": "m", "digest": f"sha256:{'a' * 64}", "size": 1, "name": "x&y"}, f'{{"mediaType":"m","digest":"sha256:{"a" * 64}","size":1,"name":"x\\u0026y"}}'),
    ],
)
def test_layer_json_follows_go(layer, json_text):
    manifest = Manifest.model_validate({"config": layer, "layers": None})
    assert manifest.layers == ()
    assert manifest.to_bytes().decode().endswith(f'"config":{json_text},"layers":[]}}\n')


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"[]", "manifest: Input should be a valid dictionary or instance of Manifest"),
        (b'{"layers":[]}', "config: Field required"),
        (b'{"config":{"mediaType":"m","digest":"sha256:xyz","size":1}}', "config.digest: Value error, invalid digest format: 'sha256:xyz'"),
        (b'{"config":{"mediaType":"m","digest":"sha256:' + b"a" * 64 + b'","size":-1}}', "config.size: Input should be greater than or equal to 0"),
        (b'{"mediaType":"application/vnd.ollama.manifest.list.v2+json","manifests":[]}', "manifest lists (one model for several runners) are not supported"),
    ],
)
def test_bad_manifests_say_what_is_wrong(data: bytes, reason: str):
    with pytest.raises(InvalidManifestError) as info:
        Manifest.from_bytes(data, name="m")
    assert str(info.value) == f"invalid manifest for 'm': {reason}"


# -- errors ----------------------------------------------------------------------------------------

ERRORS = [
    (InvalidNameError("m@d", "the model 'm@d' may not contain '@'"), 400, "invalid model name 'm@d': the model 'm@d' may not contain '@'"),
    (InvalidDigestError("sha256:x"), 400, "invalid digest format: 'sha256:x'"),
    (ModelNotFoundError("llama3"), 404, "model 'llama3' not found"),
    (DigestMismatchError("sha256:a", "sha256:b"), 400, 'digest mismatch, expected "sha256:a", got "sha256:b"'),
    (BlobNotFoundError("sha256:a"), 404, 'blob "sha256:a" not found'),
    (InvalidManifestError("m", "not JSON"), 500, "invalid manifest for 'm': not JSON"),
]


@pytest.mark.parametrize("error, status, message", ERRORS, ids=[type(e[0]).__name__ for e in ERRORS])
def test_every_store_error_has_a_message_a_hint_and_pickles(error: StoreError, status: int, message: str):
    # `status` is the server's answer (corral.server.errors.STATUS; tests/server/test_errors.py checks it)
    assert isinstance(error, StoreError)
    assert (str(error), error.message) == (message, message)
    assert error.hint
    assert error.render() == f"error: {message}\nhint: {error.hint}"
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again), again.hint, vars(again)) == (type(error), message, error.hint, vars(error))


def test_every_store_error_is_in_the_table():
    def subclasses(cls):
        return {cls} | {s for c in cls.__subclasses__() for s in subclasses(c)}

    assert {type(e) for e, _, _ in ERRORS} == subclasses(StoreError) - {StoreError}
