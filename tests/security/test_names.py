"""Hostile model names on every route that takes one: a 4xx with a JSON error, no host path, nothing
written anywhere, and the server still answering."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.security.conftest import assert_refused, files_under

NAMES = {
    "dotdot-passwd": "../../etc/passwd",
    "absolute": "/etc/passwd",
    "dotdot": "..",
    "encoded-dotdot": "..%2F..%2Fetc%2Fpasswd",
    "encoded-dots": "%2e%2e%2f%2e%2e%2fx",
    "backslashes": "..\\..\\windows\\win.ini",
    "fullwidth": "ｓｍｏｌ",
    "fullwidth-solidus": "..／..／etc／passwd",
    "nul": "smol\x00x",
    "one-megabyte": "a" * 1_000_000,
    "empty": "",
    "a:b:c": "a:b:c",
}

CHAT = [{"role": "user", "content": "hi"}]
ROUTES = {
    "generate": ("POST", "/api/generate", lambda n: {"model": n, "prompt": "hi", "stream": False}),
    "chat": ("POST", "/api/chat", lambda n: {"model": n, "messages": CHAT, "stream": False}),
    "embed": ("POST", "/api/embed", lambda n: {"model": n, "input": "hi"}),
    "embeddings": ("POST", "/api/embeddings", lambda n: {"model": n, "prompt": "hi"}),
    "show": ("POST", "/api/show", lambda n: {"model": n}),
    "create": ("POST", "/api/create", lambda n: {"model": n, "from": "smol", "stream": False}),
    "create-from": ("POST", "/api/create", lambda n: {"model": "victim", "from": n, "stream": False}),
    "copy-source": ("POST", "/api/copy", lambda n: {"source": n, "destination": "victim"}),
    "copy-destination": ("POST", "/api/copy", lambda n: {"source": "smol", "destination": n}),
    "delete": ("DELETE", "/api/delete", lambda n: {"model": n}),
    "pull": ("POST", "/api/pull", lambda n: {"model": n, "stream": False}),
    "push": ("POST", "/api/push", lambda n: {"model": n, "stream": False}),
    "v1-chat": ("POST", "/v1/chat/completions", lambda n: {"model": n, "messages": CHAT}),
    "v1-completions": ("POST", "/v1/completions", lambda n: {"model": n, "prompt": "hi"}),
    "v1-embeddings": ("POST", "/v1/embeddings", lambda n: {"model": n, "input": "hi"}),
}

# What each route answers for a name it cannot use: the invalid-name 400, or (empty) "model is required".
NOT_FOUND_ROUTES = {"generate", "chat", "embed", "embeddings", "show", "copy-source", "delete", "push",
                    "v1-chat", "v1-completions", "v1-embeddings"}


def expected_status(route: str, case: str) -> set[int]:
    if case == "empty":
        return {400}
    # a name that cannot be parsed is a 400 everywhere; where a route looks the name up first, a
    # name that no model has may also be a 404: either is safe, neither says anything of the disk
    return {400, 404} if route in NOT_FOUND_ROUTES else {400}


@pytest.mark.parametrize("case", list(NAMES))
@pytest.mark.parametrize("route", list(ROUTES))
def test_hostile_names_are_refused(fake, tmp_path, route, case):
    method, path, body = ROUTES[route]
    before = files_under(tmp_path)
    r = fake.client.request(method, path, json=body(NAMES[case]))
    assert r.status_code in expected_status(route, case), r.text[:300]
    assert_refused(fake, r, r.status_code)
    assert len(r.content) < 2048  # a 1 MB name is not echoed back
    assert files_under(tmp_path) == before
    assert fake.engines.requests == [] and fake.engines.started == []


@pytest.mark.parametrize("case", [c for c in NAMES if c not in ("empty", "nul", "one-megabyte")] + ["long"])
def test_hostile_names_on_v1_models(fake, tmp_path, case):
    before = files_under(tmp_path)
    name = "a" * 10_000 if case == "long" else NAMES[case]  # (a 1 MB URL no client sends)
    r = fake.client.get("/v1/models/" + quote(name, safe=""))
    assert r.status_code in (400, 404, 413, 414), r.text[:300]
    assert_refused(fake, r, r.status_code)
    assert len(r.content) < 2048
    assert files_under(tmp_path) == before
