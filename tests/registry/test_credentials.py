"""Credentials per host (Corral's file over Docker's), challenges, endpoints: the parts without a network."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from corral.registry import Credential, Credentials
from corral.registry.auth import Challenge, Origin, fetch_token, parse_challenge
from corral.registry.client import Endpoint, endpoint_for
from corral.registry.credentials import default_docker_config, host_key
from corral.registry.errors import CredentialsError, InsecureRegistryError
from corral.registry.events import ProgressEvent
from corral.store.names import parse


def write(path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def test_corral_file_and_docker_auths_are_read_per_host(tmp_path):
    home, docker = tmp_path / "corral", tmp_path / "docker" / "config.json"
    write(home / "credentials.json", {"Registry.Example:5000": {"username": "me", "password": "pw"},
                                      "ghcr.io": {"token": "tkn"}})
    auth = base64.b64encode(b"dock:er:pw").decode()
    write(docker, {"auths": {"https://index.docker.io/v1/": {"auth": auth},
                             "registry.example:5000": {"auth": base64.b64encode(b"x:y").decode()},
                             "empty.example": {}}})
    creds = Credentials.load(home, docker)
    assert creds.for_host("registry.example:5000") == Credential("me", "pw")  # Corral's file wins
    assert creds.for_host("index.docker.io") == Credential("dock", "er:pw")
    assert creds.for_host("ghcr.io").token == "tkn"
    assert creds.for_host("registry.example") is None  # another port is another host
    assert creds.for_host("empty.example") is None
    assert "pw" not in repr(creds.for_host("registry.example:5000")) and "pw" not in repr(creds)


def test_missing_files_are_no_credentials(tmp_path):
    assert len(Credentials.load(tmp_path / "nothing", tmp_path / "none.json")) == 0


@pytest.mark.parametrize("doc, reason", [
    ("not json", "not JSON"),
    ([], "not an object"),
    ({"h": "x"}, "the entry is not an object"),
    ({"h": {"username": "only"}}, "give both 'username' and 'password', or a 'token'"),
    ({"h": {"token": 5}}, "'token' is not a string"),
])
def test_a_broken_credentials_file_names_itself(tmp_path, doc, reason):
    path = tmp_path / "credentials.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(CredentialsError, match=reason) as caught:
        Credentials.load(tmp_path, tmp_path / "none.json")
    assert str(path) in str(caught.value)


def test_a_broken_docker_auth_is_an_error(tmp_path):
    write(tmp_path / "config.json", {"auths": {"h": {"auth": "!!!"}}})
    with pytest.raises(CredentialsError, match="not base64"):
        Credentials.load(tmp_path / "home", tmp_path / "config.json")


def test_docker_config_follows_DOCKER_CONFIG(tmp_path):
    assert default_docker_config({"DOCKER_CONFIG": str(tmp_path)}) == tmp_path / "config.json"


@pytest.mark.parametrize("text, key", [("Host", "host"), ("https://Host:5000/v1/", "host:5000"),
                                       ("host:5000/path", "host:5000"), ("http://u@h", "h")])
def test_host_keys(text, key):
    assert host_key(text) == key


def test_challenges_parse_as_registries_send_them():
    header = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push"'
    assert parse_challenge(header) == Challenge("bearer", {"realm": "https://auth.docker.io/token",
                                                           "service": "registry.docker.io",
                                                           "scope": "repository:a/b:pull,push"})
    assert parse_challenge('Basic realm="x y"') == Challenge("basic", {"realm": "x y"})
    assert parse_challenge("") is None


def test_origins_compare_scheme_host_and_port():
    assert Origin.of("https://Example.com/v2/") == Origin.of("https://example.com:443/x")
    assert Origin.of("https://example.com") != Origin.of("http://example.com")
    assert Origin.of("http://127.0.0.1:1/") != Origin.of("http://127.0.0.1:2/")


def test_a_plain_http_realm_is_refused_without_insecure():
    with httpx.Client() as http, pytest.raises(InsecureRegistryError):
        fetch_token(http, Challenge("bearer", {"realm": "http://127.0.0.1:1/token"}),
                    registry=Origin.of("https://r.example"), registry_host="r.example",
                    credential=Credential("u", "p"), default_scope="repository:a/b:pull", insecure=False)


def test_endpoints_follow_the_name_and_the_mirror():
    assert endpoint_for(parse("llama3.2")) == Endpoint("https", "registry.ollama.ai")
    assert endpoint_for(parse("llama3.2"), registry="mirror.example:5000") == Endpoint("https", "mirror.example:5000")
    assert endpoint_for(parse("llama3.2"), registry="http://m:1", insecure=True) == Endpoint("http", "m:1")
    assert endpoint_for(parse("h.example/a/b"), registry="mirror.example") == Endpoint("https", "h.example")
    assert endpoint_for(parse("h.example:8/a/b"), insecure=True) == Endpoint("http", "h.example:8")
    with pytest.raises(InsecureRegistryError):
        endpoint_for(parse("http://h.example/a/b"))
    with pytest.raises(InsecureRegistryError):
        endpoint_for(parse("llama3.2"), registry="http://mirror.example")


def test_events_are_ollamas_progress_objects():
    assert ProgressEvent("success").to_json() == {"status": "success"}
    layer = ProgressEvent("pulling abc", "sha256:abc", 10, 0)
    assert layer.to_json() == {"status": "pulling abc", "digest": "sha256:abc", "total": 10, "completed": 0}
