"""A registry that lies, drops, floods or phishes: the store stays whole and credentials stay home."""

from __future__ import annotations

import base64
import dataclasses
import json
import os

import pytest

from corral.registry import Credential, Credentials, Limits, pull
from corral.registry.errors import (
    BlobTransferError,
    InsecureRegistryError,
    InsufficientSpaceError,
    ManifestNotFoundError,
    ManifestRejectedError,
    RegistryAuthError,
)
from corral.store.errors import DigestMismatchError
from corral.store.store import Store
from tests.registry.conftest import SMALL, STREAM, files_under
from tests.registry.hostile import MODEL, HostileRegistry, digest_of

WEIGHTS = os.urandom(300_000)  # parts of 64 KiB: five of them
BASIC = "Basic " + base64.b64encode(b"me:secret").decode()


@pytest.fixture
def registry():
    with HostileRegistry() as reg:
        reg.add_model("library/m:latest", [(MODEL, WEIGHTS), ("application/vnd.ollama.image.system", b"Be brief.")])
        yield reg


@pytest.fixture
def other():
    """A second server on another port: another origin, standing for a storage or token host elsewhere."""
    with HostileRegistry() as reg:
        reg.blobs[digest_of(WEIGHTS)] = WEIGHTS
        yield reg


def blob_files(store: Store) -> list[str]:
    return sorted(p.name for p in store.blobs_dir.iterdir()) if store.blobs_dir.exists() else []


# Parallel parts from the start: one request a part; the default ramp: one request reads them all.
MODES = [pytest.param(SMALL, ["bytes=0-65535", "bytes=65536-131071", "bytes=131072-196607", "bytes=196608-262143",
                              "bytes=262144-299999"], id="parallel"),
         pytest.param(STREAM, ["bytes=0-299999"], id="one-stream")]


@pytest.mark.parametrize("options, ranges", MODES)
def test_a_clean_pull_stores_every_blob_and_the_manifest(registry, tmp_path, options, ranges):
    store = Store(tmp_path / "models")
    result = pull(store, f"{registry.host}/library/m", insecure=True, options=options)
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS
    assert result.downloaded == registry.served == len(WEIGHTS) + len(b"Be brief.") + 2
    reads = sorted(registry.seen(f"/blobs/{digest_of(WEIGHTS)}"), key=lambda s: ranged(s)[0])
    assert [s.headers["Range"] for s in reads] == ranges
    assert all(not name.endswith(("-partial", ".json")) for name in blob_files(store))
    again = pull(store, f"{registry.host}/library/m", insecure=True, options=options)
    assert again.downloaded == 0 and again.digest == result.digest


@pytest.mark.parametrize("options, ranges", MODES)
def test_a_dropped_connection_resumes_where_it_broke(registry, tmp_path, options, ranges):
    registry.behaviour.drops = [10_000, 20_000, 5]
    store = Store(tmp_path / "models")
    pull(store, f"{registry.host}/library/m", insecure=True, options=options)
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS
    weights = registry.seen(f"/blobs/{digest_of(WEIGHTS)}")
    assert sum(s.sent for s in weights) == len(WEIGHTS)  # no byte fetched twice
    assert len(weights) == len(ranges) + 3  # each drop cost one more request...
    starts = {ranged(s)[0] for s in weights}
    dropped = [s for s in weights if s.sent < ranged(s)[1] - ranged(s)[0] + 1]
    assert len(dropped) == 3
    assert all(ranged(s)[0] + s.sent in starts for s in dropped)  # ...from the byte where it broke


def ranged(seen) -> tuple[int, int]:
    first, last = seen.headers["Range"].removeprefix("bytes=").split("-")
    return int(first), int(last)


def test_a_registry_that_keeps_dropping_gives_up_with_the_partial_kept(registry, tmp_path):
    registry.behaviour.drops = [0] * 100
    store = Store(tmp_path / "models")
    with pytest.raises(BlobTransferError, match="gave up after 3 retries"):
        pull(store, f"{registry.host}/library/m", insecure=True, options=SMALL)
    assert not store.has_blob(digest_of(WEIGHTS)) and not store.has_model(f"{registry.host}/library/m")
    assert (store.blobs_dir / (store.blob_path(digest_of(WEIGHTS)).name + "-partial")).exists()


def test_wrong_bytes_are_rejected_and_nothing_enters_the_store(registry, tmp_path):
    registry.blobs[digest_of(WEIGHTS)] = bytes(len(WEIGHTS))  # the right size, the wrong bytes
    store = Store(tmp_path / "models")
    with pytest.raises(DigestMismatchError) as caught:
        pull(store, f"{registry.host}/library/m", insecure=True, options=SMALL)
    assert digest_of(WEIGHTS) in str(caught.value)
    names = blob_files(store)
    assert digest_of(WEIGHTS).replace(":", "-") not in "".join(names)  # neither the blob nor its partial
    assert not store.has_model(f"{registry.host}/library/m")


@pytest.mark.parametrize("digest", [
    "sha256:../../../../x",
    "sha256:" + "a" * 63,
    "sha256:" + "a" * 65,
    "sha512:" + "a" * 128,
    "md5:" + "a" * 32,
    "sha256-" + "a" * 64 + "/../../x",
    "sha256:" + "A" * 63 + "\n",
    "../" * 5 + "etc/passwd",
])
def test_a_malformed_digest_is_refused_before_any_path_is_made(registry, tmp_path, digest):
    doc = json.loads(registry.manifests["library/m:latest"])
    doc["layers"][0]["digest"] = digest
    registry.manifests["library/m:latest"] = json.dumps(doc).encode()
    before = files_under(tmp_path)
    with pytest.raises(ManifestRejectedError, match="layer 0 has the digest"):
        pull(Store(tmp_path / "models"), f"{registry.host}/library/m", insecure=True, options=SMALL)
    assert files_under(tmp_path) == before  # nothing written, in the store or beside it
    assert registry.seen("/blobs/") == []


def test_a_bad_config_digest_is_refused_too(registry, tmp_path):
    doc = json.loads(registry.manifests["library/m:latest"])
    doc["config"]["digest"] = "sha256:../../config"
    registry.manifests["library/m:latest"] = json.dumps(doc).encode()
    with pytest.raises(ManifestRejectedError, match="config has the digest"):
        pull(Store(tmp_path / "models"), f"{registry.host}/library/m", insecure=True, options=SMALL)
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("mode", ["huge", "huge-chunked", "endless"])
def test_a_huge_or_endless_manifest_is_refused_at_the_bound(registry, tmp_path, mode):
    registry.behaviour.manifest_mode = mode
    with pytest.raises(ManifestRejectedError, match="limit"):
        pull(Store(tmp_path / "models"), f"{registry.host}/library/m", insecure=True, options=SMALL)
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("change, message", [
    (lambda doc: doc["layers"].__setitem__(0, {**doc["layers"][0], "mediaType": "application/x-evil"}),
     "layer 0 has the unknown media type 'application/x-evil'"),
    (lambda doc: doc["config"].__setitem__("mediaType", "application/vnd.oci.image.layer.v1.tar"),
     "config has the unknown media type"),
    (lambda doc: doc["layers"].__setitem__(0, {**doc["layers"][0], "size": -1}), "layer 0 has the size -1"),
    (lambda doc: doc["layers"].__setitem__(0, {**doc["layers"][0], "size": 1 << 50}), "layer 0 has the size"),
    (lambda doc: doc["layers"].__setitem__(0, {**doc["layers"][0], "size": "12"}), "not a whole number"),
    (lambda doc: doc.__setitem__("layers", doc["layers"] * 600), "1200 layers; the limit is 1000"),
    (lambda doc: doc.__setitem__("mediaType", "application/vnd.oci.image.index.v1+json"), "manifest lists"),
    (lambda doc: doc.__setitem__("schemaVersion", 1), "schemaVersion"),
])
def test_a_manifest_outside_the_rules_is_refused_with_a_clear_message(registry, tmp_path, change, message):
    doc = json.loads(registry.manifests["library/m:latest"])
    change(doc)
    registry.manifests["library/m:latest"] = json.dumps(doc).encode()
    with pytest.raises(ManifestRejectedError) as caught:
        pull(Store(tmp_path / "models"), f"{registry.host}/library/m", insecure=True, options=SMALL)
    assert message in str(caught.value)
    assert not (tmp_path / "models").exists()


def test_a_missing_model_says_so_in_ollamas_words(registry, tmp_path):
    with pytest.raises(ManifestNotFoundError) as caught:
        pull(Store(tmp_path / "models"), f"{registry.host}/library/nothing:here", insecure=True, options=SMALL)
    assert str(caught.value) == "pull model manifest: file does not exist"


def test_plain_http_needs_insecure(registry, tmp_path):
    with pytest.raises(InsecureRegistryError, match="insecure protocol http"):
        pull(Store(tmp_path / "models"), f"http://{registry.host}/library/m", options=SMALL)
    assert registry.requests == []


@pytest.mark.parametrize("options", [SMALL, STREAM], ids=["parallel", "one-stream"])
def test_a_redirect_to_another_host_gets_no_credentials(registry, other, tmp_path, options):
    registry.behaviour.basic = BASIC
    registry.behaviour.redirect_blobs = other.url
    other.blobs.update(registry.blobs)
    credentials = Credentials({registry.host: Credential(username="me", password="secret")})
    store = Store(tmp_path / "models")
    pull(store, f"{registry.host}/library/m", insecure=True, credentials=credentials, options=options)
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS
    assert other.seen("/storage/") and all("Authorization" not in s.headers for s in other.requests)
    assert all(s.headers.get("Authorization") == BASIC for s in registry.seen("/v2/library/m/blobs/"))


def test_a_token_realm_on_another_host_is_asked_without_credentials(registry, other, tmp_path):
    registry.behaviour.realm = f"{other.url}/token"
    registry.behaviour.token = other.behaviour.token = "token-from-elsewhere"
    credentials = Credentials({registry.host: Credential(username="me", password="secret")})
    store = Store(tmp_path / "models")
    pull(store, f"{registry.host}/library/m", insecure=True, credentials=credentials, options=SMALL)
    asked = other.seen("/token")
    assert asked and all("Authorization" not in s.headers for s in other.requests)
    assert "scope=repository" in asked[0].path and "service=hostile" in asked[0].path
    assert store.has_model(f"{registry.host}/library/m")


def test_a_token_realm_on_the_registry_itself_gets_the_credentials(registry, tmp_path):
    registry.behaviour.realm = f"{registry.url}/token"
    credentials = Credentials({registry.host: Credential(username="me", password="secret")})
    pull(Store(tmp_path / "models"), f"{registry.host}/library/m", insecure=True, credentials=credentials,
         options=SMALL)
    assert [s.headers.get("Authorization") for s in registry.seen("/token")] == [BASIC]


def test_credentials_of_another_host_are_never_sent(registry, tmp_path):
    registry.behaviour.basic = BASIC
    credentials = Credentials({"127.0.0.1:1": Credential(username="me", password="secret")})
    with pytest.raises(RegistryAuthError, match="needs a username and password"):
        pull(Store(tmp_path / "models"), f"{registry.host}/library/m", insecure=True, credentials=credentials,
             options=SMALL)
    assert all("Authorization" not in s.headers for s in registry.requests)


@pytest.mark.parametrize("options", [SMALL, STREAM], ids=["parallel", "one-stream"])
def test_a_registry_that_ignores_ranges_is_read_in_one_piece(registry, tmp_path, options):
    registry.behaviour.ignore_ranges = True
    store = Store(tmp_path / "models")
    pull(store, f"{registry.host}/library/m", insecure=True, options=options)
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS



def test_a_pull_that_cannot_fit_on_the_disk_is_refused_before_any_download(registry, tmp_path):
    doc = json.loads(registry.manifests["library/m:latest"])
    doc["layers"][0]["size"] = 1 << 49  # 512 TiB: within the bound set here, beyond any disk
    registry.manifests["library/m:latest"] = json.dumps(doc).encode()
    options = dataclasses.replace(SMALL, limits=Limits(max_blob_size=1 << 50))
    with pytest.raises(InsufficientSpaceError, match="not enough disk space"):
        pull(Store(tmp_path / "models"), f"{registry.host}/library/m", insecure=True, options=options)
    assert registry.seen("/blobs/") == []
