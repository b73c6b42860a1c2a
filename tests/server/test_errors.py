"""Every route answers every error in its API's shape, with the status the server's table gives its class."""

from __future__ import annotations

import inspect

import httpx
import pytest

import corral.store.create
from corral.compiler import errors as compiler_errors
from corral.dsl import errors as dsl_errors
from corral.registry import errors as registry_errors
from corral.runtime import errors as runtime_errors
from corral.compiler.errors import CompileError, TemplateError
from corral.errors import CorralError
from corral.engine import errors as engine_errors
from corral.store import errors as store_errors
from corral.engine.errors import ContextOverflowError, EngineError, ServerBusyError, WorkerCrashedError
from corral.store.errors import InvalidNameError, ModelNotFoundError
from corral.server import errors as server_errors
from corral.server.app import create_app
from corral.server.errors import STATUS, status_of
from corral.config.settings import Settings
from tests.server.fakes import Broken
from tests.server.live import LiveServer

DIGEST = "sha256:" + "a" * 64
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
NATIVE = [
    ("POST", "/api/generate", {"model": "m", "prompt": "hi"}),
    ("POST", "/api/generate", {"model": "m", "prompt": "hi", "stream": False}),
    ("POST", "/api/generate", {"model": "m"}),  # load
    ("POST", "/api/chat", CHAT),
    ("POST", "/api/chat", {**CHAT, "stream": False}),
    ("POST", "/api/chat", {"model": "m", "messages": [], "keep_alive": 0}),  # unload
    ("POST", "/api/embed", {"model": "m", "input": "hi"}),
    ("POST", "/api/embeddings", {"model": "m", "prompt": "hi"}),
    ("GET", "/api/tags", None),
    ("POST", "/api/show", {"model": "m"}),
    ("GET", "/api/ps", None),
    ("POST", "/api/create", {"model": "m", "from": "base"}),
    ("POST", "/api/create", {"model": "m", "from": "base", "stream": False}),
    ("POST", "/api/copy", {"source": "m", "destination": "n"}),
    ("DELETE", "/api/delete", {"model": "m"}),
    ("POST", f"/api/blobs/{DIGEST}", None),
]
OPENAI = [
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/chat/completions", {**CHAT, "stream": True}),
    ("POST", "/v1/completions", {"model": "m", "prompt": "hi"}),
    ("POST", "/v1/completions", {"model": "m", "prompt": "hi", "stream": True}),
    ("POST", "/v1/embeddings", {"model": "m", "input": "hi"}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/m", None),
]
ERRORS = [
    (ModelNotFoundError("m"), 404, "model 'm' not found"),
    (InvalidNameError("m!", "bad"), 400, "invalid model name 'm!': bad"),
    (ServerBusyError("server busy, please try again.  maximum pending requests exceeded"), 503,
     "server busy, please try again.  maximum pending requests exceeded"),
    (ContextOverflowError("the input length exceeds the context length"), 400,
     "the input length exceeds the context length"),
    (WorkerCrashedError("the model worker crashed"), 500, "the model worker crashed"),
    (TemplateError("template error: unexpected end"), 400, "template error: unexpected end"),
    (RuntimeError("boom /home/u/x"), 500, "internal error; the server log has the details"),  # a bug's text stays in the log
]


@pytest.fixture(scope="module", params=ERRORS, ids=[type(e[0]).__name__ for e in ERRORS])
def broken(request, tmp_path_factory):
    error, status, message = request.param
    dep = Broken(error)
    app = create_app(Settings(models=tmp_path_factory.mktemp("models")), scheduler=dep, models=dep, store=dep)
    patch = pytest.MonkeyPatch()
    patch.setattr(corral.store.create, "create_from_request", dep.create_from_request, raising=False)
    with LiveServer(app) as server:
        yield server, status, message
    patch.undo()


def call(server, method, path, body) -> httpx.Response:
    return httpx.request(method, server.url + path, json=body, timeout=30)


@pytest.mark.parametrize("method, path, body", NATIVE, ids=[f"{m} {p} {i}" for i, (m, p, _) in enumerate(NATIVE)])
def test_native_error_shape(broken, method, path, body):
    server, status, message = broken
    r = call(server, method, path, body)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"error": message}
    assert ("retry-after" in r.headers) == (status == 503)


@pytest.mark.parametrize("method, path, body", OPENAI, ids=[f"{m} {p} {i}" for i, (m, p, _) in enumerate(OPENAI)])
def test_openai_error_shape(broken, method, path, body):
    server, status, message = broken
    r = call(server, method, path, body)
    assert r.status_code == status
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    assert r.json() == {"error": {"message": message, "type": kind, "param": None, "code": None}}
    assert ("retry-after" in r.headers) == (status == 503)


@pytest.mark.parametrize("method, path", [(m, p) for m, p, _ in NATIVE if m != "GET"] +
                         [(m, p) for m, p, _ in OPENAI if m != "GET"])
def test_bad_bodies_are_400_in_each_apis_shape(fake, method, path):
    r = fake.client.request(method, path, content=b"")
    if path.startswith("/api/blobs"):
        return  # a blob upload's body is the blob itself
    assert r.status_code == 400
    if path.startswith("/v1/"):
        assert r.json()["error"]["message"] == "missing request body"
        assert r.json()["error"]["type"] == "invalid_request_error"
    else:
        assert r.json() == {"error": "missing request body"}


def test_blob_errors(fake):
    digest = f"sha256:{'b' * 64}"
    assert fake.client.head(f"/api/blobs/{digest}").status_code == 404  # HEAD answers no body
    assert fake.client.head("/api/blobs/sha256:nothex").status_code == 400
    r = fake.client.post("/api/blobs/sha256:nothex", content=b"data")
    assert r.status_code == 400 and r.json()["error"].startswith("invalid digest format")


def test_unknown_routes_and_methods(fake):
    assert fake.client.get("/api/nothing").json() == {"error": "404 page not found"}
    assert fake.client.get("/api/chat").status_code == 405
    r = fake.client.post("/v1/nothing", json={})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def _error_classes():
    for module in (store_errors, registry_errors, engine_errors, compiler_errors, dsl_errors, runtime_errors,
                   server_errors):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, CorralError) and cls.__module__ == module.__name__:
                yield cls


@pytest.mark.parametrize("cls", list(_error_classes()), ids=lambda c: c.__name__)
def test_every_error_class_maps_to_a_client_or_server_status(cls):
    """No Corral error falls through to the generic 500: it or an ancestor below CorralError is in the table."""
    listed = next((c for c in cls.__mro__ if c in STATUS), None)
    assert listed is not None and listed is not CorralError, f"{cls.__name__} has no status in STATUS"
    error = cls.__new__(cls)
    assert status_of(error) == STATUS[listed]
    if issubclass(cls, CompileError):
        assert status_of(error) == 400
    if issubclass(cls, EngineError) and cls is not EngineError:
        assert status_of(error) in (400, 500, 503)


@pytest.mark.parametrize("error, status", [
    (store_errors.InvalidNameError("m@d", "no '@'"), 400), (store_errors.InvalidDigestError("sha256:x"), 400),
    (store_errors.ModelNotFoundError("llama3"), 404), (store_errors.DigestMismatchError("sha256:a", "sha256:b"), 400),
    (store_errors.BlobNotFoundError("sha256:a"), 404), (store_errors.InvalidManifestError("m", "not JSON"), 500),
    (ServerBusyError("busy"), 503), (ContextOverflowError("long"), 400), (WorkerCrashedError("died"), 500),
    (server_errors.BadRequestError("bad"), 400),
], ids=lambda e: type(e).__name__ if isinstance(e, Exception) else str(e))
def test_ollamas_statuses(error, status):
    """The most specific class wins: a ModelNotFoundError is a StoreError (500) that answers 404."""
    assert status_of(error) == status
