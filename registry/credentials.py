"""Credentials per registry host, from Corral's own file and from Docker's `config.json`.

    <home>/credentials.json          {"HOST[:PORT]": {"username": "...", "password": "..."}}
                                     {"HOST[:PORT]": {"token": "..."}}   (sent as a Bearer token)
    ~/.docker/config.json            {"auths": {"HOST[:PORT]": {"auth": base64("user:password")}}}

Corral's file wins over Docker's for the same host. Keys are compared as `host[:port]` in lower
case, so Docker's `https://index.docker.io/v1/` style keys match too. A credential belongs to the
exact host it is filed under (the port included): the client sends it to that host and to no
other, neither to a redirect target nor to a token realm elsewhere. Docker's credential helpers
(`credsStore`, `credHelpers`) are not run.

HF_TOKEN (Settings.hf_token, passed to `load`) is filed as a token under Hugging Face's two hosts,
`hf.co` and `huggingface.co`, over what the files say for them (corral.registry.huggingface sends
it to HF_ENDPOINT instead when that is set).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from corral.registry.errors import CredentialsError

CREDENTIALS_FILE = "credentials.json"
HUGGING_FACE_HOSTS = ("hf.co", "huggingface.co")  # the hosts of `hf.co/OWNER/REPO` names, and their token


@dataclass(frozen=True, slots=True)
class Credential:
    """What one registry host accepts: a username and password, or a token, or both."""

    username: str | None = None
    password: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never print a secret in a traceback or a log line
        return f"Credential(username={self.username!r}, password={'***' if self.password else None}, " \
               f"token={'***' if self.token else None})"

    @property
    def basic(self) -> str | None:
        """`Basic <base64>` for the username and password, or None without both."""
        if self.username is None or self.password is None:
            return None
        raw = f"{self.username}:{self.password}".encode("utf-8")
        return "Basic " + base64.b64encode(raw).decode("ascii")


def host_key(text: str) -> str:
    """`host[:port]` in lower case from a host, a `host:port` or a URL (`https://Host:5000/v1/`)."""
    text = text.strip()
    if "://" in text:
        text = urlsplit(text).netloc
    text = text.split("/", 1)[0].rsplit("@", 1)[-1]
    return text.lower()


class Credentials:
    """A read-only map from registry host to Credential."""

    def __init__(self, entries: Mapping[str, Credential] | None = None):
        self._entries = {host_key(host): cred for host, cred in (entries or {}).items()}

    def __repr__(self) -> str:
        return f"Credentials(hosts={sorted(self._entries)})"

    def __len__(self) -> int:
        return len(self._entries)

    def hosts(self) -> list[str]:
        return sorted(self._entries)

    def for_host(self, host: str) -> Credential | None:
        """The credential filed under exactly this `host[:port]`, or None."""
        return self._entries.get(host_key(host))

    def with_token(self, hosts: tuple[str, ...], token: str | None) -> Credentials:
        """These credentials with `token` filed under each of `hosts` (unchanged when it is None)."""
        if not token:
            return self
        return Credentials({**self._entries, **{host: Credential(token=token) for host in hosts}})

    @classmethod
    def load(cls, home: Path, docker_config: Path | None = None, *, hf_token: str | None = None) -> Credentials:
        """`<home>/credentials.json` over `docker_config` (default: `default_docker_config()`), and
        `hf_token` (HF_TOKEN) for Hugging Face's hosts over both.

        Missing files are no credentials; a file that exists but is not valid raises
        CredentialsError naming it.
        """
        docker = default_docker_config() if docker_config is None else Path(docker_config)
        entries = read_docker_config(docker)
        entries.update(read_corral_file(Path(home) / CREDENTIALS_FILE))
        return cls(entries).with_token(HUGGING_FACE_HOSTS, hf_token)


def default_docker_config(env: Mapping[str, str] | None = None) -> Path:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (Docker's own rule)."""
    env = os.environ if env is None else env
    folder = env.get("DOCKER_CONFIG")
    return (Path(folder) if folder else Path.home() / ".docker") / "config.json"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CredentialsError(str(path), e.strerror or str(e)) from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CredentialsError(str(path), f"not JSON ({e})") from e
    if not isinstance(data, dict):
        raise CredentialsError(str(path), "the top level is not an object")
    return data


def _text(path: Path, host: str, entry: Mapping[str, Any], field: str) -> str | None:
    value = entry.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CredentialsError(str(path), f"{host}: {field!r} is not a string")
    return value


def read_corral_file(path: Path) -> dict[str, Credential]:
    """Corral's credentials file: `{"HOST": {"username", "password"} | {"token"}}`; {} when absent."""
    data = _read_json(path)
    if data is None:
        return {}
    found: dict[str, Credential] = {}
    for host, entry in data.items():
        if not isinstance(entry, dict):
            raise CredentialsError(str(path), f"{host}: the entry is not an object")
        cred = Credential(username=_text(path, host, entry, "username"),
                          password=_text(path, host, entry, "password"),
                          token=_text(path, host, entry, "token"))
        if cred.basic is None and cred.token is None:
            raise CredentialsError(str(path), f"{host}: give both 'username' and 'password', or a 'token'")
        found[host_key(host)] = cred
    return found


def read_docker_config(path: Path) -> dict[str, Credential]:
    """The `auths` of Docker's config.json (`auth` is base64 `user:password`); {} when absent."""
    data = _read_json(path)
    if data is None:
        return {}
    auths = data.get("auths") or {}
    if not isinstance(auths, dict):
        raise CredentialsError(str(path), "'auths' is not an object")
    found: dict[str, Credential] = {}
    for host, entry in auths.items():
        if not isinstance(entry, dict):
            continue
        username = _text(path, host, entry, "username")
        password = _text(path, host, entry, "password")
        if (auth := _text(path, host, entry, "auth")) is not None:
            try:
                decoded = base64.b64decode(auth, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as e:
                raise CredentialsError(str(path), f"{host}: 'auth' is not base64 of user:password") from e
            username, sep, password = decoded.partition(":")
            if not sep:
                raise CredentialsError(str(path), f"{host}: 'auth' is not base64 of user:password")
        token = _text(path, host, entry, "registrytoken")
        cred = Credential(username=username, password=password, token=token)
        if cred.basic is not None or cred.token is not None:
            found[host_key(host)] = cred
    return found
