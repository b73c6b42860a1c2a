"""Browser protections: the `Host` header check against DNS rebinding, and CORS refusals.

DNS rebinding: a page on `evil.example` re-points its name at 127.0.0.1, and the browser then
lets it read the local server's answers as same-origin. The browser still sends `Host:
evil.example`, so a server on a loopback address answers only requests whose Host is a loopback
name (`localhost`, `*.localhost`, a 127.x.x.x or `[::1]` literal, any port) or one of
CORRAL_ALLOWED_HOSTS; any other gets 403. On a non-loopback address the server is meant to be
reached by other names, so nothing is checked unless CORRAL_ALLOWED_HOSTS lists them.

CORS: a request carrying an `Origin` that is neither allowed (CORRAL_ORIGINS plus Ollama's
defaults) nor the server's own gets 403 before any handler runs, preflight included, so a page
cannot make the server do work whose answer it may not read. Allowed origins are echoed back by
the response middleware in app.py; `*` is never sent, nor `Access-Control-Allow-Credentials`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

from sanic import Request, Sanic

from corral.config.settings import Settings
from corral.server.errors import ForbiddenError

LOOPBACK_NAMES = ("localhost", "*.localhost")


@dataclass(frozen=True)
class HostPolicy:
    """Which Host names the server answers; `check` False answers every name."""

    check: bool
    names: tuple[str, ...]  # patterns beyond the loopback ones, lower case, `*` wildcards

    @classmethod
    def from_settings(cls, settings: Settings) -> "HostPolicy":
        names = tuple(n.strip().lower().rstrip(".") for n in settings.allowed_hosts if n.strip())
        return cls(check=bool(names) or is_loopback(settings.bind[0]), names=names)

    def allows(self, header: str | None) -> bool:
        """Whether a request with this Host header may be answered."""
        if not self.check or not header:
            return True  # no Host at all (HTTP/1.0) is no browser's request, so no rebinding
        name = host_name(header)
        if name is None:
            return False
        if _loopback_literal(name) or any(_pattern(p).match(name) for p in LOOPBACK_NAMES + self.names):
            return True
        return False


def is_loopback(address: str) -> bool:
    """Whether the server listens on a loopback address (`127.0.0.1`, `::1`, `localhost`)."""
    address = address.strip("[]").lower()
    return address == "localhost" or _loopback_literal(address)


def host_name(header: str) -> str | None:
    """The name in a Host header without its port, lower case; None when it cannot be read."""
    text = header.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1:] and not _port(text[end + 1:])):
            return None
        return text[1:end]
    name, sep, port = text.partition(":")
    if sep and not _port(":" + port):
        return None
    return name.rstrip(".") or None


def _port(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit() and len(text) <= 6


def _loopback_literal(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")) + r"\Z")


def _same_origin(request: Request, origin: str) -> bool:
    host = request.headers.get("host", "")
    return bool(host) and origin.lower() in (f"http://{host}".lower(), f"https://{host}".lower())


async def check_request(request: Request) -> None:
    """Request middleware: 403 for a Host the policy refuses or an Origin CORS does not allow."""
    ctx = request.app.ctx
    policy: HostPolicy = ctx.host_policy
    if not policy.allows(request.headers.get("host")):
        raise ForbiddenError("this server does not answer requests for that host name; "
                             "add it to CORRAL_ALLOWED_HOSTS to allow it")
    origin = request.headers.get("origin")
    if origin and not _same_origin(request, origin) and not any(p.match(origin) for p in ctx.origin_patterns):
        raise ForbiddenError("origin not allowed; add it to CORRAL_ORIGINS to allow it")


def register(app: Sanic) -> None:
    """Install the checks on `app` (before any other request middleware)."""
    app.ctx.host_policy = HostPolicy.from_settings(app.ctx.settings)
    app.register_middleware(check_request, "request")
