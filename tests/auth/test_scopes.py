"""What each route needs, what each scope allows, and which model names a key's patterns admit."""

from __future__ import annotations

import pytest

from corral.auth.scopes import Need, Scope, allows, model_allowed, need_of


@pytest.mark.parametrize("path, need", [
    ("/", Need.OPEN),
    ("/api/version", Need.OPEN),
    ("/api/generate", Need.INFERENCE),
    ("/api/chat", Need.INFERENCE),
    ("/api/embed", Need.INFERENCE),
    ("/api/embeddings", Need.INFERENCE),
    ("/api/tags", Need.INFERENCE),
    ("/api/show", Need.INFERENCE),
    ("/api/ps", Need.INFERENCE),
    ("/v1/chat/completions", Need.INFERENCE),
    ("/v1/completions", Need.INFERENCE),
    ("/v1/embeddings", Need.INFERENCE),
    ("/v1/models", Need.INFERENCE),
    ("/v1/models/smol:latest", Need.INFERENCE),
    ("/v1/messages", Need.INFERENCE),
    ("/api/create", Need.ADMIN),
    ("/api/delete", Need.ADMIN),
    ("/api/copy", Need.ADMIN),
    ("/api/pull", Need.ADMIN),
    ("/api/push", Need.ADMIN),
    ("/api/blobs/sha256:" + "0" * 64, Need.ADMIN),
    ("/api/library", Need.ADMIN),
    ("/api/library/apply", Need.ADMIN),
    ("/api/something-new", Need.ADMIN),
    ("/metrics", Need.LOCAL_OR_ADMIN),
    ("/api/chat/", Need.INFERENCE),
])
def test_the_need_of_each_route(path, need):
    assert need_of(path) is need


@pytest.mark.parametrize("scope, need, allowed", [
    (Scope.INFERENCE, Need.OPEN, True),
    (Scope.INFERENCE, Need.INFERENCE, True),
    (Scope.INFERENCE, Need.ADMIN, False),
    (Scope.INFERENCE, Need.LOCAL_OR_ADMIN, False),
    (Scope.ADMIN, Need.INFERENCE, True),
    (Scope.ADMIN, Need.ADMIN, True),
    (Scope.ADMIN, Need.LOCAL_OR_ADMIN, True),
])
def test_what_each_scope_allows(scope, need, allowed):
    assert allows(scope, need) is allowed


@pytest.mark.parametrize("patterns, name, allowed", [
    ((), "anything:7b", True),
    (("smol",), "smol", True),
    (("smol",), "smol:latest", True),
    (("smol:latest",), "smol", True),
    (("smol",), "registry.ollama.ai/library/smol:latest", True),
    (("smol",), "smol:7b", False),
    (("smol",), "smollm2", False),
    (("smol*",), "smollm2:135m", True),
    (("llama3.2:*",), "llama3.2:1b", True),
    (("llama3.2:*",), "llama3.2", True),  # :latest
    (("llama3.2:*",), "llama3.1:8b", False),
    (("team/*",), "team/model:v1", True),
    (("team/*",), "other/model", False),
    (("a", "b*"), "bee", True),
    (("Smol",), "smol", False),  # case-sensitive, as names in the store
    (("*",), "hf.co/owner/repo:Q4_K_M", True),
])
def test_model_patterns(patterns, name, allowed):
    assert model_allowed(patterns, name) is allowed
