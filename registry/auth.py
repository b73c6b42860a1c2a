"""Registry authentication: a 401's challenge, the token it leads to, and where credentials may go.

A registry that wants authentication answers 401 with

    WWW-Authenticate: Bearer realm="https://auth.example/token",service="registry.example",scope="repository:library/m:pull"

(or `Basic realm="..."`). For Bearer the client GETs the realm with `service` and `scope` and
reads `token` (or `access_token`) from the JSON answer; the token is then sent to the registry.

The rule that keeps credentials at home (Ollama's CVE-2025-51471 sent them to a realm an attacker
named): a credential is sent only to an URL whose origin (scheme, host, port) is the registry's
own. A realm on another host is still asked for a token, but anonymously, without the
registry's credentials; a realm that redirects is not followed; a realm over plain http is refused
unless the caller allowed insecure transport. That keeps public models on registries whose
token service lives elsewhere (Docker Hub's auth.docker.io) pullable, and leaks nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import httpx

from corral.registry.credentials import Credential
from corral.registry.errors import InsecureRegistryError, RegistryAuthError, RegistryUnreachableError

MAX_TOKEN_RESPONSE = 1 << 20  # a token answer is a few KB; anything near this is not one

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)')


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a URL points: scheme, host (lower case) and port (the scheme's default when absent)."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str | httpx.URL) -> Origin:
        u = httpx.URL(str(url))
        scheme = u.scheme.lower()
        port = u.port if u.port is not None else {"http": 80, "https": 443}.get(scheme, 0)
        return cls(scheme, (u.host or "").lower(), port)


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed WWW-Authenticate header: the scheme (`bearer` or `basic`) and its parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a WWW-Authenticate header; None when there is none we can read."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            break
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = match.end()
    return Challenge(scheme.lower(), params)


def fetch_token(http: httpx.Client, challenge: Challenge, *, registry: Origin, registry_host: str,
                credential: Credential | None, default_scope: str, insecure: bool) -> str:
    """A bearer token from the challenge's realm; the registry's credential goes only to its own origin.

    Raises RegistryAuthError when the realm is missing, answers with an error or without a token;
    InsecureRegistryError for a plain http realm without `insecure`.
    """
    realm = challenge.realm
    try:
        realm_url = httpx.URL(realm)
    except httpx.InvalidURL as e:
        raise RegistryAuthError(registry_host, f"the token realm {realm!r} is not a URL") from e
    if realm_url.scheme not in ("http", "https") or not realm_url.host:
        raise RegistryAuthError(registry_host, f"the token realm {realm!r} is not an http(s) URL")
    if realm_url.scheme == "http" and not insecure:
        raise InsecureRegistryError(realm)
    params = {}
    if service := challenge.params.get("service"):
        params["service"] = service
    params["scope"] = challenge.params.get("scope") or default_scope
    headers = {"Accept": "application/json"}
    if credential is not None and Origin.of(realm_url) == registry:
        if credential.basic is not None:
            headers["Authorization"] = credential.basic
        elif credential.token is not None:
            headers["Authorization"] = f"Bearer {credential.token}"
    try:
        with http.stream("GET", realm_url, params=params, headers=headers, follow_redirects=False) as resp:
            body = _read_small(resp)
    except httpx.TransportError as e:
        raise RegistryUnreachableError(realm_url.host, f"token service: {e}") from e
    if resp.status_code != 200:
        raise RegistryAuthError(registry_host, f"the token service answered {resp.status_code}"
                                + (f": {snippet(body)}" if body else ""))
    try:
        data = httpx.Response(200, content=body).json()
    except ValueError:
        data = None
    token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryAuthError(registry_host, "the token service sent no token")
    return token


def _read_small(resp: httpx.Response) -> bytes:
    chunks, size = [], 0
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if size > MAX_TOKEN_RESPONSE:
            raise RegistryAuthError(str(resp.url.host), "the token service's answer is too large")
        chunks.append(chunk)
    return b"".join(chunks)


def snippet(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."
