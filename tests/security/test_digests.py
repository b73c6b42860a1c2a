"""Hostile digests and bodies on HEAD/POST /api/blobs: 400 for a digest that is not
`sha256:<64 lower-case hex>`, nothing left in the store by a bad or cut-off upload, one correct
blob from 50 concurrent uploads of it."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.security.conftest import assert_alive, assert_refused, files_under

DATA = b"blob body " * 1000
GOOD = "sha256:" + hashlib.sha256(DATA).hexdigest()

BAD_DIGESTS = {
    "dotdot": "sha256:..%2F..%2Fx",
    "dotdot-hex": "sha256:..%2F..%2F" + "a" * 58,
    "63-hex": "sha256:" + "a" * 63,
    "65-hex": "sha256:" + "a" * 65,
    "sha512": "sha512:" + "a" * 128,
    "md5": "md5:" + "a" * 32,
    "no-algorithm": "a" * 64,
    "not-hex": "sha256:" + "g" * 64,
    "empty-hex": "sha256:",
    "fullwidth": "sha256:" + "ａ" * 64,
    "encoded-nul": "sha256:" + "a" * 63 + "%00",
}


def _message(digest: str) -> str:
    return f"invalid digest format: {digest}"


@pytest.mark.parametrize("case", list(BAD_DIGESTS))
def test_head_with_a_bad_digest_is_400(fake, tmp_path, case):
    before = files_under(tmp_path)
    r = fake.client.head(f"/api/blobs/{BAD_DIGESTS[case]}")
    assert r.status_code == 400
    assert files_under(tmp_path) == before
    assert_alive(fake)


@pytest.mark.parametrize("case", list(BAD_DIGESTS))
def test_post_with_a_bad_digest_is_400_and_writes_nothing(fake, tmp_path, case):
    before = files_under(tmp_path)
    r = fake.client.post(f"/api/blobs/{BAD_DIGESTS[case]}", content=DATA)
    body = assert_refused(fake, r, 400)
    assert body["error"].startswith("invalid digest format")
    assert files_under(tmp_path) == before


def test_an_uppercase_digest_names_the_same_blob(fake, tmp_path):
    """As Ollama reads them: hex digits in either case, stored under the lower-case name."""
    before = files_under(tmp_path)
    upper = "sha256:" + GOOD.removeprefix("sha256:").upper()
    assert fake.client.head(f"/api/blobs/{upper}").status_code == 404
    assert fake.client.post(f"/api/blobs/{upper}", content=DATA).status_code == 201
    assert files_under(tmp_path) - before == {str((fake.store.root / "blobs" / GOOD.replace(":", "-"))
                                                  .relative_to(tmp_path))}
    assert fake.client.head(f"/api/blobs/{GOOD}").status_code == 200


def test_a_body_that_does_not_match_its_digest_leaves_nothing(fake, tmp_path):
    before = files_under(tmp_path)
    other = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    r = fake.client.post(f"/api/blobs/{other}", content=DATA)
    assert assert_refused(fake, r, 400)["error"] == f'digest mismatch, expected "{other}", got "{GOOD}"'
    assert files_under(tmp_path) == before
    assert fake.client.head(f"/api/blobs/{other}").status_code == 404


def test_fifty_concurrent_uploads_of_one_digest_store_one_correct_blob(fake, tmp_path):
    before = files_under(tmp_path)

    def upload(_: int) -> int:
        with httpx.Client(base_url=fake.url, timeout=60) as client:
            return client.post(f"/api/blobs/{GOOD}", content=DATA).status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(upload, range(50)))
    assert set(statuses) <= {200, 201} and 201 in statuses
    added = files_under(tmp_path) - before
    assert len(added) == 1
    (path,) = added
    assert (tmp_path / path).read_bytes() == DATA
    assert (tmp_path / path).parent == fake.store.root / "blobs"
    assert_alive(fake)


def test_a_blob_over_the_size_limit_is_413_by_its_length(serve, tmp_path):
    server = serve(max_blob_size=1000)
    before = files_under(tmp_path)
    r = server.client.post(f"/api/blobs/{GOOD}", content=DATA)
    assert assert_refused(server, r, 413)["error"] == (
        "the blob is larger than the 1000 bytes allowed (CORRAL_MAX_BLOB_SIZE)")
    assert files_under(tmp_path) == before


def test_a_chunked_blob_over_the_size_limit_is_cut_off_and_leaves_nothing(serve, tmp_path):
    server = serve(max_blob_size=1000)
    before = files_under(tmp_path)

    def chunks():
        for i in range(0, len(DATA), 100):
            yield DATA[i:i + 100]

    r = server.client.post(f"/api/blobs/{GOOD}", content=chunks())  # no Content-Length: chunked
    assert assert_refused(server, r, 413)["error"] == "Request body exceeds the size limit"
    assert files_under(tmp_path) == before
    assert server.client.head(f"/api/blobs/{GOOD}").status_code == 404


def test_a_stalled_upload_is_cut_off_and_leaves_nothing(serve, tmp_path):
    server = serve(read_timeout=0.5)
    before = files_under(tmp_path)
    stalled = threading.Event()

    def chunks():
        yield DATA[:100]
        stalled.wait(3)  # longer than the read timeout (httpx reads the answer once the body is sent)
        yield DATA[100:]

    try:
        r = server.client.post(f"/api/blobs/{GOOD}", content=chunks())
    finally:
        stalled.set()
    assert assert_refused(server, r, 408)["error"] == "the upload stalled (CORRAL_READ_TIMEOUT)"
    assert files_under(tmp_path) == before
