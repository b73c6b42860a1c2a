"""The decisions: may the server listen here, and who is this request.

`check_bind` is the bind policy: without a key, only a loopback address is safe to listen on
(as Ollama's default), unless the operator says `--insecure-no-auth`. `authorize` decides one
request from what the route needs, the key it presented and where it came from; it returns the
key's record (None for an open request) or raises the refusal the server answers with.
"""

from __future__ import annotations

import ipaddress

from corral.auth.errors import PermissionDeniedError, UnauthorizedError
from corral.auth.keys import KeyRecord, KeyRing
from corral.auth.scopes import Need, Scope, allows, model_allowed
from corral.errors import CorralError

CREATE_HINT = "create one with `corral keys create NAME --scope admin` (or set CORRAL_API_KEYS)"


class BindRefusedError(CorralError):
    """`corral serve` on a non-loopback address with no API key."""


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) is this machine only; `0.0.0.0` and names are not."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def check_bind(host: str, has_keys: bool, insecure_no_auth: bool) -> None:
    """Refuse to listen on a non-loopback `host` when no key exists, unless told it is wanted."""
    if has_keys or insecure_no_auth or is_loopback(host):
        return
    raise BindRefusedError(
        f"refusing to listen on {host} without an API key: anyone who can reach it could use it",
        f"{CREATE_HINT}, or pass --insecure-no-auth (CORRAL_INSECURE_NO_AUTH=1) to serve it open")


def authorize(ring: KeyRing, need: Need, key: str | None, *, client_local: bool, listening_local: bool,
              insecure_no_auth: bool, models: tuple[str, ...] = ()) -> KeyRecord | None:
    """The record of the key that may make this request, None when it is open to anyone, or a refusal."""
    if need is Need.OPEN:
        return None
    records = ring.records()
    if not records:
        # No key at all: open as Ollama is where that is safe; an exposed server without keys
        # (they were all revoked while it ran) fails closed.
        if listening_local or insecure_no_auth:
            return None
        raise UnauthorizedError("this server needs an API key and has none configured", CREATE_HINT)
    if need is Need.LOCAL_OR_ADMIN and client_local and not key:
        return None
    if not key:
        raise UnauthorizedError("missing API key: send it as 'Authorization: Bearer KEY'",
                                "set CORRAL_API_KEY for the corral command")
    record = ring.find(key)
    if record is None:
        raise UnauthorizedError("invalid API key")
    if not allows(record.scope, need):
        raise PermissionDeniedError(f"API key {record.name!r} has scope {record.scope.value}; this needs "
                             f"{Scope.ADMIN.value}")
    for model in models:
        if not model_allowed(record.models, model):
            raise PermissionDeniedError(f"API key {record.name!r} may not use model {model[:200]!r}")
    return record


def bearer(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents: `Authorization: Bearer KEY`, else `x-api-key: KEY`."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None
