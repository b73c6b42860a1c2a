"""The bind policy, who a request runs as, and where its key is read from."""

from __future__ import annotations

import pytest

from corral.auth.errors import PermissionDeniedError, UnauthorizedError
from corral.auth.keys import KeyFile, KeyRing, parse_env_keys
from corral.auth.policy import BindRefusedError, authorize, bearer, check_bind, is_loopback
from corral.auth.scopes import Need


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.com", False), ("", False),
])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host, has_keys, insecure, refused", [
    ("127.0.0.1", False, False, False),
    ("0.0.0.0", False, False, True),
    ("0.0.0.0", True, False, False),
    ("0.0.0.0", False, True, False),
    ("10.0.0.1", False, False, True),
])
def test_bind_policy(host, has_keys, insecure, refused):
    if refused:
        with pytest.raises(BindRefusedError, match=f"refusing to listen on {host} without an API key") as e:
            check_bind(host, has_keys, insecure)
        assert "corral keys create" in e.value.hint and "--insecure-no-auth" in e.value.hint
    else:
        check_bind(host, has_keys, insecure)


@pytest.mark.parametrize("authorization, x_api_key, key", [
    ("Bearer k1", None, "k1"),
    ("bearer  k1 ", None, "k1"),
    (None, "k2", "k2"),
    ("Bearer k1", "k2", "k1"),
    ("Basic dXNlcjpwYXNz", None, None),
    ("Bearer ", None, None),
    (None, None, None),
])
def test_the_key_a_request_presents(authorization, x_api_key, key):
    assert bearer(authorization, x_api_key) == key


@pytest.fixture
def ring(tmp_path) -> KeyRing:
    return KeyRing(KeyFile(tmp_path), parse_env_keys("user:ukey:inference,ops:akey:admin"))


LOCAL = dict(client_local=True, listening_local=True, insecure_no_auth=False)
REMOTE = dict(client_local=False, listening_local=False, insecure_no_auth=False)


@pytest.mark.parametrize("need, key, where, outcome", [
    (Need.OPEN, None, REMOTE, None),
    (Need.INFERENCE, None, LOCAL, UnauthorizedError("missing API key")),
    (Need.INFERENCE, "wrong", LOCAL, UnauthorizedError("invalid API key")),
    (Need.INFERENCE, "ukey", REMOTE, "user"),
    (Need.INFERENCE, "akey", REMOTE, "ops"),
    (Need.ADMIN, "ukey", REMOTE, PermissionDeniedError("'user' has scope inference; this needs admin")),
    (Need.ADMIN, "akey", REMOTE, "ops"),
    (Need.LOCAL_OR_ADMIN, None, LOCAL, None),
    (Need.LOCAL_OR_ADMIN, None, REMOTE, UnauthorizedError("missing API key")),
    (Need.LOCAL_OR_ADMIN, "ukey", REMOTE, PermissionDeniedError("needs admin")),
    (Need.LOCAL_OR_ADMIN, "akey", REMOTE, "ops"),
])
def test_who_a_request_runs_as(ring, need, key, where, outcome):
    if isinstance(outcome, Exception):
        with pytest.raises(type(outcome), match=str(outcome)):
            authorize(ring, need, key, **where)
    else:
        record = authorize(ring, need, key, **where)
        assert (record.name if record else None) == outcome


@pytest.mark.parametrize("where, open_", [(LOCAL, True), (REMOTE, False),
                                          ({**REMOTE, "insecure_no_auth": True}, True)])
def test_without_any_key_only_loopback_or_insecure_is_open(tmp_path, where, open_):
    ring = KeyRing(KeyFile(tmp_path))
    if open_:
        assert authorize(ring, Need.ADMIN, None, **where) is None
    else:
        with pytest.raises(UnauthorizedError, match="has none configured"):
            authorize(ring, Need.INFERENCE, "anything", **where)


def test_a_key_limited_to_models(tmp_path):
    file = KeyFile(tmp_path)
    from corral.auth.scopes import Scope
    key, _ = file.add("t", Scope.INFERENCE, ["smol*"])
    ring = KeyRing(file)
    assert authorize(ring, Need.INFERENCE, key, models=("smollm2:latest",), **LOCAL).name == "t"
    assert authorize(ring, Need.INFERENCE, key, **LOCAL).name == "t"
    with pytest.raises(PermissionDeniedError, match="'t' may not use model 'llama3'"):
        authorize(ring, Need.INFERENCE, key, models=("smol", "llama3"), **LOCAL)
