"""`corral keys create|list|revoke` on the home's key file, no server needed."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from corral.auth.keys import key_hash
from corral.auth.limits import Usage
from corral.auth.usage import UsageFile
from corral.cli.main import main

KEY = re.compile(r"^corral_[A-Za-z0-9_-]{43}\n$")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def home() -> Path:
    return Path(os.environ["CORRAL_MODELS"]).parent


def test_create_prints_the_key_alone_and_stores_its_hash(capsys, home):
    code, out, err = run(capsys, "keys", "create", "team-a", "--scope", "inference", "--models", "smol*",
                         "llama3.2:*", "--rpm", "60", "--tpm", "1000")
    assert code == 0 and KEY.match(out), out
    assert err == "created inference key 'team-a': it is shown only now\n"
    stored = json.loads((home / "keys.json").read_text())["keys"]
    assert [(k["name"], k["hash"], k["scope"], k["models"], k["rpm"], k["tpm"]) for k in stored] == \
        [("team-a", key_hash(out.strip()), "inference", ["smol*", "llama3.2:*"], 60, 1000)]
    assert out.strip() not in (home / "keys.json").read_text()


def test_list_shows_names_scopes_limits_and_usage_but_no_key(capsys, home):
    _, a, _ = run(capsys, "keys", "create", "a", "--scope", "admin")
    _, b, _ = run(capsys, "keys", "create", "b", "--models", "smol", "--rpm", "5")
    UsageFile(home).write({"b": Usage(requests=3, prompt_tokens=21, generated_tokens=9)})
    code, out, _ = run(capsys, "keys", "list")
    assert code == 0 and a.strip() not in out and b.strip() not in out
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["NAME", "SCOPE", "MODELS", "RPM", "TPM", "REQUESTS", "PROMPT", "TOKENS", "GENERATED",
                       "TOKENS", "CREATED"]
    assert [row[:8] for row in rows[1:]] == [["a", "admin", "*", "-", "-", "0", "0", "0"],
                                             ["b", "inference", "smol", "5", "-", "3", "21", "9"]]


def test_list_includes_env_keys(capsys, monkeypatch):
    monkeypatch.setenv("CORRAL_API_KEYS", "ci:secret-value:inference")
    code, out, _ = run(capsys, "keys", "list")
    assert code == 0 and "secret-value" not in out
    assert out.splitlines()[1].split() == ["ci", "inference", "*", "-", "-", "0", "0", "0", "CORRAL_API_KEYS"]


def test_list_without_keys_says_how_to_make_one(capsys):
    assert run(capsys, "keys", "list") == (0, "", "no API keys; create one with: corral keys create NAME "
                                                  "--scope inference\n")


def test_revoke(capsys, home):
    run(capsys, "keys", "create", "a")
    run(capsys, "keys", "create", "b")
    assert run(capsys, "keys", "revoke", "a") == (0, "", "revoked key 'a'\n")
    assert [k["name"] for k in json.loads((home / "keys.json").read_text())["keys"]] == ["b"]
    code, out, err = run(capsys, "keys", "revoke", "a")
    assert (code, out) == (1, "") and err == "error: no key named 'a'\nhint: see the names with: corral keys list\n"


@pytest.mark.parametrize("argv, message", [
    (["keys", "create", "a"], "error: a key named 'a' exists already\nhint: revoke it first: corral keys revoke a\n"),
    (["keys", "create", "bad name"], "error: 'bad name' is not a key name\n"),
])
def test_refusals(capsys, argv, message):
    run(capsys, "keys", "create", "a")
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "") and err.startswith(message)


@pytest.mark.parametrize("argv", [["keys", "create", "a", "--scope", "root"], ["keys", "create", "a", "--rpm", "0"],
                                  ["keys"]])
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2


def test_an_env_key_cannot_be_revoked_here(capsys, monkeypatch):
    monkeypatch.setenv("CORRAL_API_KEYS", "ci:k1")
    code, _, err = run(capsys, "keys", "revoke", "ci")
    assert code == 2 and "comes from CORRAL_API_KEYS" in err and "k1" not in err
