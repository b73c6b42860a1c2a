"""/api/create over HTTP reads no server path: `from` is a model name or an uploaded blob's digest,
files and adapters are digests of uploaded blobs, and a path is refused with one message whatever
is there (no existence oracle, CVE-2024-39719). Errors name no host path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from corral.cli.client import Client
from corral.cli.models import _create_through
from corral.dsl import parse_modelfile
from corral.server.errors import strip_paths
from tests.ggufs import write_tiny_llama
from tests.security.conftest import assert_alive, assert_refused, files_under

NOT_A_PATH = ("from must be a model name or the digest of an uploaded blob (sha256:<64 hex digits>); "
              "over HTTP a path on the server is never read: upload the file with POST /api/blobs/<digest> "
              "and name it in 'files', as `corral create` does")


@pytest.fixture
def real_gguf(tmp_path) -> Path:
    """A valid GGUF on the server's disk, outside its store."""
    (tmp_path / "outside").mkdir()
    return write_tiny_llama(tmp_path / "outside" / "real.gguf", seed=7)  # not the store's smol


def _create(fake, body):
    return fake.client.post("/api/create", json={"model": "victim", "stream": False, **body})


PATHS = {
    "existing-file": "/etc/passwd",
    "missing-file": "/nonexistent/corral/x.gguf",
    "existing-folder": "/etc",
    "dotdot": "../../etc/passwd",
    "dot-slash": "./smol.gguf",
    "home": "~/.ssh/id_rsa",
    "gguf-name": "weights.gguf",
    "bin-name": "weights.bin",
    "backslash": "..\\..\\x.gguf",
    "deep-relative": "a/b/c/d",
}


@pytest.mark.parametrize("case", list(PATHS))
def test_a_path_in_from_is_refused_with_one_message(fake, tmp_path, case):
    before = files_under(tmp_path)
    r = _create(fake, {"from": PATHS[case]})
    assert assert_refused(fake, r, 400)["error"] == NOT_A_PATH
    assert files_under(tmp_path) == before
    assert fake.client.post("/api/show", json={"model": "victim"}).status_code == 404


def test_a_real_gguf_path_is_refused_like_a_missing_one(fake, real_gguf):
    """The answer is the same byte for byte: nothing tells the client the file is there."""
    there = _create(fake, {"from": str(real_gguf)})
    missing = _create(fake, {"from": str(real_gguf.with_name("missing.gguf"))})
    assert there.status_code == missing.status_code == 400
    assert there.content == missing.content
    assert fake.client.post("/api/show", json={"model": "victim"}).status_code == 404


def test_an_old_style_modelfile_field_reads_nothing(fake, real_gguf):
    r = _create(fake, {"modelfile": f"FROM {real_gguf}"})
    assert assert_refused(fake, r, 400)["error"] == "neither 'from' or 'files' was specified"


@pytest.mark.parametrize("field, files, message", [
    ("files", {"../../x.gguf": "sha256:" + "a" * 64}, "file path must be relative"),
    ("files", {"/abs/x.gguf": "sha256:" + "a" * 64}, "file path must be relative"),
    ("files", {"x.gguf": "/etc/passwd"}, "invalid digest format: 'passwd'"),  # even the client's own path is cut
    ("files", {"x.gguf": "sha256:" + "a" * 64}, None),  # not uploaded
    ("adapters", {"a.gguf": "/etc/passwd"}, "invalid digest format: 'passwd'"),  # even the client's own path is cut
    ("adapters", {"a.gguf": "sha256:" + "b" * 64}, None),
])
def test_files_and_adapters_are_uploaded_digests(fake, tmp_path, field, files, message):
    before = files_under(tmp_path)
    body = {field: files} if field == "files" else {"from": "smol", field: files}
    error = assert_refused(fake, _create(fake, body), 400)["error"]
    if message is not None:
        assert error == message
    else:
        assert "is not in the store" in error
    assert files_under(tmp_path) == before


def test_an_uploaded_blob_that_is_not_a_gguf_names_no_store_path(fake):
    data = b"not a gguf at all" * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert fake.client.post(f"/api/blobs/{digest}", content=data).status_code == 201
    r = _create(fake, {"files": {"x.gguf": digest}})
    assert r.status_code == 400
    assert_refused(fake, r, 400)


def test_create_from_an_uploaded_blob(fake, real_gguf):
    data = real_gguf.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert fake.client.post(f"/api/blobs/{digest}", content=data).status_code == 201
    r = _create(fake, {"files": {"real.gguf": digest}, "system": "hi"})
    assert r.status_code == 200 and r.json() == {"status": "success"}
    assert fake.client.post("/api/show", json={"model": "victim"}).json()["system"] == "hi"


def test_a_name_that_is_also_a_store_folder_is_read_as_a_name(fake):
    """`blobs` is a folder under the store root, where the compiler would look for files."""
    r = _create(fake, {"from": "blobs/sha256-" + "a" * 64})
    assert r.status_code in (400, 404, 502)  # a name no registry serves here, never a blob read as weights
    assert fake.client.post("/api/show", json={"model": "victim"}).status_code == 404
    assert_alive(fake)


def test_the_cli_uploads_local_files_as_blobs(fake, tmp_path, real_gguf):
    modelfile = tmp_path / "outside" / "Modelfile"
    modelfile.write_text("FROM ./real.gguf\nSYSTEM from the cli\n")
    definition = parse_modelfile(modelfile.read_text(), str(modelfile)).definition
    digest = "sha256:" + hashlib.sha256(real_gguf.read_bytes()).hexdigest()
    with Client(fake.url.removeprefix("http://")) as client:
        assert not client.has_blob(digest)
        assert _create_through(client, "fromcli", modelfile, definition, False) == 0
        assert client.has_blob(digest)
        assert _create_through(client, "fromcli2", modelfile, definition, False) == 0  # HEAD: not sent again
    assert fake.client.post("/api/show", json={"model": "fromcli"}).json()["system"] == "from the cli"


@pytest.mark.parametrize("text, shown", [
    ("open /home/alice/.corral/models/blobs/sha256-ab: denied", "open sha256-ab: denied"),
    ("'/srv/library/smol.Modelfile' is broken", "'smol.Modelfile' is broken"),
    ("upload it with POST /api/blobs first", "upload it with POST /api/blobs first"),
    ("http://127.0.0.1:5000/v2/library/x/manifests/latest answered 500",
     "http://127.0.0.1:5000/v2/library/x/manifests/latest answered 500"),
    ("relative/path/kept.gguf", "relative/path/kept.gguf"),
    ("path=/tmp/pytest-1/x/y.gguf", "path=y.gguf"),
])
def test_error_text_loses_host_paths(text, shown):
    assert strip_paths(text) == shown
