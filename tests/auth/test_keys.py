"""The key file (hashes only, 0600, atomic), key records, CORRAL_API_KEYS, and lookup by key."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest

from corral.auth.errors import KeyFileError
from corral.auth.keys import KEY_PREFIX, KeyFile, KeyRecord, KeyRing, key_hash, new_key, parse_env_keys
from corral.auth.scopes import Scope


def test_a_new_key_is_prefixed_random_and_43_characters_after_its_prefix():
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(k.startswith(KEY_PREFIX) and len(k) == len(KEY_PREFIX) + 43 for k in keys)


def test_the_hash_is_sha256_of_the_key():
    assert key_hash("corral_x") == "sha256:" + hashlib.sha256(b"corral_x").hexdigest()


def test_the_file_keeps_the_record_and_the_hash_never_the_key(tmp_path):
    key, record = KeyFile(tmp_path).add("team-a", Scope.INFERENCE, ["smol*"], rpm=60, tpm=1000)
    path = tmp_path / "keys.json"
    text = path.read_text()
    assert key not in text and key[len(KEY_PREFIX):] not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(text)["keys"] == [{"name": "team-a", "hash": key_hash(key), "scope": "inference",
                                         "models": ["smol*"], "rpm": 60, "tpm": 1000,
                                         "created": record.created}]
    assert KeyFile(tmp_path).read() == [record]
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temporary file left


def test_names_are_unique_and_revoke_removes_one(tmp_path):
    file = KeyFile(tmp_path)
    file.add("a", Scope.ADMIN)
    file.add("b", Scope.INFERENCE)
    with pytest.raises(KeyFileError, match="a key named 'a' exists already"):
        file.add("a", Scope.INFERENCE)
    assert file.remove("a").name == "a"
    assert [r.name for r in file.read()] == ["b"]
    with pytest.raises(KeyFileError, match="no key named 'a'"):
        file.remove("a")


@pytest.mark.parametrize("name", ["", "-a", "a b", "a/b", "a:b", "x" * 65, "é"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(KeyFileError, match="is not a key name"):
        KeyFile(tmp_path).add(name, Scope.ADMIN)


@pytest.mark.parametrize("text, problem", [
    ("not json", "malformed"),
    ('{"keys": 3}', "malformed"),
    ('{"keys": [{"name": "a"}]}', "needs a name and a hash"),
    ('{"keys": [{"name": "a", "hash": "h", "scope": "root"}]}', "malformed"),
    ('{"keys": [{"name": "a", "hash": "h", "rpm": 0}]}', "at least 1"),
    ('{"keys": [{"name": "a", "hash": "h", "models": "x"}]}', "list of patterns"),
])
def test_a_malformed_file_is_an_error_naming_the_problem(tmp_path, text, problem):
    (tmp_path / "keys.json").write_text(text)
    with pytest.raises(KeyFileError, match=problem):
        KeyFile(tmp_path).read()


@pytest.mark.parametrize("text, expected", [
    ("", []),
    ("k1", [("env-1", "k1", Scope.ADMIN)]),
    ("ci:k1", [("ci", "k1", Scope.ADMIN)]),
    ("ci:k1:inference, ops:k2:admin", [("ci", "k1", Scope.INFERENCE), ("ops", "k2", Scope.ADMIN)]),
    ("k1,,k2", [("env-1", "k1", Scope.ADMIN), ("env-2", "k2", Scope.ADMIN)]),
])
def test_env_keys(text, expected):
    records = parse_env_keys(text)
    assert [(r.name, r.hash, r.scope, r.source) for r in records] == \
        [(n, key_hash(k), s, "env") for n, k, s in expected]


@pytest.mark.parametrize("text", ["a:b:c:d", "ci:k1:root", "ci::admin", "bad name:k1"])
def test_bad_env_keys_name_the_entry_but_never_the_key(text):
    with pytest.raises(KeyFileError, match="entry 1 of CORRAL_API_KEYS") as error:
        parse_env_keys(text)
    assert "k1" not in str(error.value) and "k1" not in (error.value.hint or "")


def test_the_ring_finds_a_key_and_sees_a_new_file_without_restart(tmp_path):
    file = KeyFile(tmp_path)
    ring = KeyRing(file, parse_env_keys("ci:envkey:inference"))
    assert [r.name for r in ring.records()] == ["ci"]
    key, _ = file.add("ops", Scope.ADMIN)
    assert ring.find(key).name == "ops"
    assert ring.find("envkey").name == "ci"
    assert ring.find(key + "x") is None and ring.find("") is None
    file.remove("ops")
    assert ring.find(key) is None


def test_a_record_round_trips_through_json():
    record = KeyRecord("a", key_hash("k"), Scope.ADMIN, ("x*",), 5, None, "2026-01-01T00:00:00Z")
    assert KeyRecord.from_json(record.to_json()) == record
