"""API keys at the door: the request middleware that authenticates, authorizes and rate-limits
every /api and /v1 request, and the metering of the tokens each key's requests use.

`install(app)` (called by create_app) builds one `Guard` from the settings: the key ring (the
home's key file, re-read when it changes, plus CORRAL_API_KEYS), the limiter and the usage file.
The middleware reads the key from `Authorization: Bearer KEY` or `x-api-key` (Anthropic's
clients), lets corral.auth.policy decide, and keeps the key's record on `request.ctx.api_key`.
Refusals are CorralErrors (401, 403, 429 with Retry-After), rendered by the app's error handler
in the shape of the API the path names. Handlers pass their event streams through `metered`,
which counts a finished generation's tokens against the key; usage is written to the home at
most once a second and when the server stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from sanic import Request, Sanic

from corral.auth.keys import KeyFile, KeyRecord, KeyRing, parse_env_keys
from corral.auth.limits import Limiter
from corral.auth.policy import authorize, bearer, check_bind, is_loopback
from corral.auth.scopes import MODEL_FIELDS, model_allowed, need_of
from corral.auth.usage import UsageFile
from corral.config.settings import Settings
from corral.errors import CorralError
from corral.runtime.inference import Done, Event

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0  # how stale `corral keys list`'s usage may be while the server runs


def home_of(settings: Settings) -> Path:
    """The Corral home: the folder that holds the store (`~/.corral` for `~/.corral/models`)."""
    return settings.models.parent


@dataclass
class Guard:
    """The keys, budgets and usage of one server."""

    ring: KeyRing
    usage_file: UsageFile
    listening_local: bool
    insecure_no_auth: bool
    limiter: Limiter = field(default_factory=Limiter)
    _flush: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, settings: Settings) -> Guard:
        home = home_of(settings)
        return cls(KeyRing(KeyFile(home), parse_env_keys(settings.api_keys)), UsageFile(home),
                   is_loopback(settings.bind[0]), settings.insecure_no_auth)

    def check(self, request: Request) -> KeyRecord | None:
        """The key this request may run as (None: open), or the refusal raised."""
        need = need_of(request.path)
        key = bearer(request.headers.get("authorization"), request.headers.get("x-api-key"))
        record = authorize(self.ring, need, key, client_local=is_loopback(request.ip or ""),
                           listening_local=self.listening_local, insecure_no_auth=self.insecure_no_auth,
                           models=_models_of(request))
        if record is not None:
            self.limiter.admit(record.name, record.rpm, record.tpm)
            self._dirty()
        return record

    def spend(self, record: KeyRecord, prompt_tokens: int, generated_tokens: int) -> None:
        self.limiter.spend(record.name, record.tpm, prompt_tokens, generated_tokens)
        self._dirty()

    def _dirty(self) -> None:
        if self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush = loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write the usage counters to the home now."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self.limiter.usage:
            return
        try:
            self.usage_file.write(self.limiter.usage)
        except OSError as e:
            log.warning("could not write the keys' usage: %s", e.strerror)

    def load_usage(self) -> None:
        """Continue the counters where the last run left them."""
        for name, usage in self.usage_file.read().items():
            self.limiter.usage.setdefault(name, usage)


def _models_of(request: Request) -> tuple[str, ...]:
    """The models a request names: in the path of /v1/models/ID, and in its JSON body's model fields
    (a body that is not JSON names none: the handler answers its own 400; a streamed blob upload has
    no body here)."""
    if request.path.startswith("/v1/models/"):
        return (request.path[len("/v1/models/"):],)
    if not request.body:
        return ()
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return ()
    if not isinstance(body, dict):
        return ()
    named = [v for k in MODEL_FIELDS if isinstance(v := body.get(k), str) and v]
    base = body.get("from")  # /api/create: a base model by name (a digest names an uploaded blob)
    if isinstance(base, str) and base and not base.startswith("sha256:"):
        named.append(base)
    return tuple(named)


def install(app: Sanic) -> None:
    """Put the guard in front of every route of `app` (create_app calls this)."""
    guard = Guard.of(app.ctx.settings)

    async def _check(request: Request) -> None:
        if request.method == "OPTIONS":  # a browser's preflight carries no credentials
            return
        request.ctx.guard = guard
        record = request.ctx.api_key = guard.check(request)
        request.ctx.key_name = record.name if record else ""  # server/metrics.py counts by it

    async def _load(app_: Sanic) -> None:
        guard.load_usage()

    async def _save(app_: Sanic) -> None:
        guard.flush()

    app.register_middleware(_check, "request")
    app.register_listener(_load, "before_server_start")
    app.register_listener(_save, "after_server_stop")


def visible(request: Request, name: str) -> bool:
    """Whether the request's key may see model `name` in a listing (tags, ps, /v1/models): a key
    limited to some models lists only those, so the others' names do not leak."""
    record: KeyRecord | None = getattr(request.ctx, "api_key", None)
    return record is None or model_allowed(record.models, name)


def has_keys(settings: Settings) -> bool:
    """Whether any API key is configured (the key file's or CORRAL_API_KEYS')."""
    return bool(KeyRing(KeyFile(home_of(settings)), parse_env_keys(settings.api_keys)).records())


def count(request: Request, prompt_tokens: int, generated_tokens: int = 0) -> None:
    """Count tokens a request used (an embedding's) against its key, if it ran as one."""
    record: KeyRecord | None = getattr(request.ctx, "api_key", None)
    if record is not None:
        request.ctx.guard.spend(record, prompt_tokens, generated_tokens)


async def metered(request: Request, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """`events` unchanged, counting the finished generation's tokens against the request's key.

    Prompt tokens are counted as OpenAI's usage counts them: evaluated plus reused from the cache.
    """
    async with aclosing(events) as it:  # closing this closes the generation, as the handlers expect
        async for event in it:
            if isinstance(event, Done):
                count(request, event.prompt_eval_count + event.prompt_cached, event.eval_count)
            yield event


class TlsError(CorralError):
    """The TLS certificate or key cannot be used."""


def listen_options(settings: Settings) -> dict[str, Any]:
    """What `app.run` needs beyond host and port, after the bind policy: `ssl` when TLS is set.

    Raises BindRefusedError for a non-loopback address without keys (corral.auth.policy), and
    TlsError for half a TLS pair or files that do not load (naming the setting, not the path).
    """
    check_bind(settings.bind[0], has_keys(settings), settings.insecure_no_auth)
    if settings.tls_cert is None and settings.tls_key is None:
        return {}
    if settings.tls_cert is None or settings.tls_key is None:
        raise TlsError("HTTPS needs both a certificate and its key",
                       "give --tls-cert and --tls-key (CORRAL_TLS_CERT, CORRAL_TLS_KEY) together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else getattr(e, "reason", None) or "not PEM"
        raise TlsError(f"cannot load the TLS certificate {settings.tls_cert.name} and key "
                       f"{settings.tls_key.name}: {reason}", "give PEM files, the key unencrypted") from None
    return {"ssl": context}
