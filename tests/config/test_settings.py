"""Settings: every field documented, CORRAL_* variables read, hosts and durations parsed as Ollama does."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from corral.config.settings import DEFAULT_ORIGINS, Settings, parse_host, problems, variables


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name):
    description = Settings.model_fields[name].description
    assert description and len(description) > 20, f"Settings.{name} needs a description"


def test_defaults_match_ollama(monkeypatch, tmp_path):
    for var in variables():
        monkeypatch.delenv(var, raising=False)
    s = Settings(models=tmp_path)
    assert s.host == "127.0.0.1:11434" and s.bind == ("127.0.0.1", 11434)
    assert s.keep_alive == "5m" and s.keep_alive_seconds == 300
    assert s.max_queue == 512 and s.num_parallel == 0 and s.library is None and s.origins == []
    assert s.omp_wait_policy is None and s.cpu_repack is None and s.nohistory is False


def test_reads_corral_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CORRAL_HOST", "0.0.0.0:8080")
    monkeypatch.setenv("CORRAL_MODELS", str(tmp_path / "store"))
    monkeypatch.setenv("CORRAL_KEEP_ALIVE", "1h30m")
    monkeypatch.setenv("CORRAL_MAX_LOADED_MODELS", "2")
    monkeypatch.setenv("CORRAL_NUM_PARALLEL", "4")
    monkeypatch.setenv("CORRAL_MAX_QUEUE", "10")
    monkeypatch.setenv("CORRAL_LIBRARY", str(tmp_path / "lib"))
    monkeypatch.setenv("CORRAL_ORIGINS", "https://example.com, http://*.test")
    s = Settings()
    assert s.bind == ("0.0.0.0", 8080)
    assert s.models == tmp_path / "store" and s.library == tmp_path / "lib"
    assert s.keep_alive_seconds == 5400 and s.max_loaded_models == 2 and s.num_parallel == 4 and s.max_queue == 10
    assert s.origins == ["https://example.com", "http://*.test"]
    assert s.allowed_origins == ("https://example.com", "http://*.test") + DEFAULT_ORIGINS


def test_models_defaults_to_the_corral_store(monkeypatch):
    monkeypatch.delenv("CORRAL_MODELS", raising=False)
    assert Settings().models == Path.home() / ".corral" / "models"


@pytest.mark.parametrize("value, under_home", [("/srv/models", None), ("~/m", "m"), ("", ".corral/models")])
def test_models_expands_home_and_treats_empty_as_unset(monkeypatch, value, under_home):
    monkeypatch.setenv("CORRAL_MODELS", value)
    # Each test has a home of its own, so paths under it are known only when the test runs.
    assert Settings().models == (Path(value) if under_home is None else Path.home() / under_home)


@pytest.mark.parametrize("env, policy, repack, nohistory", [
    ({}, None, None, False),
    ({"CORRAL_OMP_WAIT_POLICY": "PASSIVE", "CORRAL_CPU_REPACK": "OFF", "CORRAL_NOHISTORY": "1"}, "PASSIVE", "off", True),
    ({"CORRAL_OMP_WAIT_POLICY": "", "CORRAL_CPU_REPACK": "on", "CORRAL_NOHISTORY": "0"}, None, "on", True),
    ({"CORRAL_CPU_REPACK": "maybe", "CORRAL_NOHISTORY": ""}, None, None, False),
])
def test_worker_and_repl_variables(monkeypatch, tmp_path, env, policy, repack, nohistory):
    """Unset or empty means the default; CORRAL_CPU_REPACK other than on/off means as learnt;
    any non-empty CORRAL_NOHISTORY (even 0) turns the history off."""
    for var in ("CORRAL_OMP_WAIT_POLICY", "CORRAL_CPU_REPACK", "CORRAL_NOHISTORY"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    s = Settings(models=tmp_path)
    assert (s.omp_wait_policy, s.cpu_repack, s.nohistory) == (policy, repack, nohistory)


def test_bad_values_name_their_variables(monkeypatch):
    monkeypatch.setenv("CORRAL_KEEP_ALIVE", "5y")
    monkeypatch.setenv("CORRAL_NUM_PARALLEL", "many")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [line.split(":")[0] for line in problems(caught.value)] == ["CORRAL_KEEP_ALIVE", "CORRAL_NUM_PARALLEL"]


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1", ("127.0.0.1", 11434)),
    ("0.0.0.0", ("0.0.0.0", 11434)),
    ("localhost:8080", ("localhost", 8080)),
    (":8080", ("127.0.0.1", 8080)),
    ("http://example.com", ("example.com", 80)),
    ("https://example.com", ("example.com", 443)),
    ("http://1.2.3.4:5678", ("1.2.3.4", 5678)),
    ("http://1.2.3.4:5678/path", ("1.2.3.4", 5678)),
    ("[::1]:9000", ("::1", 9000)),
    ("  \"10.0.0.1:1\"  ", ("10.0.0.1", 1)),
])
def test_host_forms(text, expected):
    assert parse_host(text) == expected


@pytest.mark.parametrize("text", ["localhost:http", "localhost:70000", "[::1"])
def test_bad_hosts_are_errors(text):
    with pytest.raises(ValueError):
        parse_host(text)


def test_host_is_stored_normalized(tmp_path):
    assert Settings(models=tmp_path, host=":9999").host == "127.0.0.1:9999"
    assert Settings(models=tmp_path, host="[::1]:9").host == "[::1]:9"
    assert Settings(models=tmp_path, host="http://example.com").host == "example.com:80"
    # a client of an https:// address must speak TLS to it, so the scheme stays
    https = Settings(models=tmp_path, host="https://example.com")
    assert https.host == "https://example.com:443" and https.bind == ("example.com", 443)


@pytest.mark.parametrize("value, seconds", [("5m", 300), ("0", 0), ("-1", -1), ("-1m", -1), ("600", 600),
                                            ("1.5s", 1.5)])
def test_keep_alive_accepts_durations_and_seconds(tmp_path, value, seconds):
    assert Settings(models=tmp_path, keep_alive=value).keep_alive_seconds == seconds


def test_bad_keep_alive_names_the_problem(tmp_path):
    with pytest.raises(ValidationError, match='unknown unit "y"'):
        Settings(models=tmp_path, keep_alive="5y")


def test_bad_numbers_are_rejected(tmp_path):
    with pytest.raises(ValidationError, match="num_parallel"):
        Settings(models=tmp_path, num_parallel=-1)
