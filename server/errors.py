"""Errors as the two HTTP APIs answer them: one status table, one body shape per API.

Exception tree of the server's own errors (the rest come from the layers below):

    CorralError                        (corral.errors)
     +-- ApiError                      a request the server refuses before reaching the runtime
          +-- BadRequestError          malformed body or a field with a bad value

What each error answers is chosen here and nowhere else (`status_of`):

* a class in `STATUS`, or the nearest ancestor that is (the most specific class wins): its status.
  The lower layers' errors (corral.store, corral.registry, corral.engine, corral.compiler,
  corral.dsl, corral.runtime) declare no status of their own: what a failure means to an HTTP
  client is the server's business;
* Sanic's own exceptions (unknown route, wrong method, oversized body): their status;
* anything else is a bug: 500, logged with its traceback.

Bodies: the native API answers `{"error": "<message>"}`, the OpenAI API
`{"error": {"message", "type", "param", "code"}}` with the type taken from the status as Ollama
does, and the Anthropic one (/v1/messages) `{"type": "error", "error": {"type", "message"}}`.
ServerBusyError (503) also sends `Retry-After`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sanic import Request
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, json as json_response

from corral.auth.errors import KeyFileError, PermissionDeniedError, RateLimitedError, UnauthorizedError
from corral.compiler.errors import CompileError
from corral.dsl.errors import DefinitionError, FormatError
from corral.engine.errors import ContextOverflowError, EngineError, EngineInputError, ServerBusyError
from corral.errors import CorralError
from corral.registry.errors import (BlobTransferError, CredentialsError, InsecureRegistryError, InsufficientSpaceError,
                                    ManifestNotFoundError, ManifestRejectedError, RegistryAuthError, RegistryError,
                                    RegistryResponseError, RegistryUnreachableError, TransferCancelledError)
from corral.runtime.errors import RequestError
from corral.store.errors import (BlobNotFoundError, DigestMismatchError, InvalidDigestError, InvalidManifestError,
                                 InvalidNameError, ModelNotFoundError, StoreError)

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
"""What a 503 tells the client to wait: the queue moves as fast as the model generates."""


class ApiError(CorralError):
    """A request the server refuses; `message` is what the client sees."""

    def __init__(self, message: str, param: str | None = None):
        self.message = message
        self.param = param  # the request field at fault, for the OpenAI error body
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.message, self.param))


class BadRequestError(ApiError):
    """The body is missing, is not JSON, or a field has a value the API does not accept."""


class ForbiddenError(ApiError):
    """A request the server will not answer for who sent it: a Host or Origin it does not allow."""


_SANIC_MESSAGES = {404: "404 page not found", 405: "405 method not allowed"}


STATUS: dict[type[CorralError], int] = {
    # the server's own refusals
    ApiError: 400,
    ForbiddenError: 403,
    # a definition (stored, or in the library) that does not compile is the client's to fix
    DefinitionError: 400,
    CompileError: 400,
    FormatError: 500,  # a stored definition that cannot be written back as a Modelfile
    # the store, with Ollama's statuses
    StoreError: 500,
    InvalidNameError: 400,
    InvalidDigestError: 400,
    ModelNotFoundError: 404,
    DigestMismatchError: 400,
    BlobNotFoundError: 404,
    InvalidManifestError: 500,
    # request planning (corral.runtime): a request that cannot be planned is the client's
    RequestError: 400,
    # the engine: a request it cannot run is the client's, a crash or a failed load is ours
    EngineError: 500,
    ContextOverflowError: 400,
    EngineInputError: 400,
    ServerBusyError: 503,
    # a registry (pull, push): the client's mistakes are 4xx, a registry that fails us is a bad gateway
    RegistryError: 500,
    InsecureRegistryError: 400,
    RegistryUnreachableError: 502,
    RegistryAuthError: 401,
    RegistryResponseError: 502,
    ManifestNotFoundError: 404,
    ManifestRejectedError: 502,
    BlobTransferError: 502,
    InsufficientSpaceError: 507,
    TransferCancelledError: 499,  # nginx's "client closed request": the caller stopped it
    CredentialsError: 500,
    # API keys (corral.auth): no key or a wrong one, a key without the right, a spent budget
    UnauthorizedError: 401,
    PermissionDeniedError: 403,
    RateLimitedError: 429,
    KeyFileError: 500,
}
"""The HTTP status of each Corral error class; a class not listed answers its nearest listed ancestor's."""


def status_of(exc: BaseException) -> int:
    """The HTTP status an exception answers with: the most specific class `STATUS` lists, else 500."""
    if isinstance(exc, SanicException):
        return int(exc.status_code)
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


def message_of(exc: BaseException) -> str:
    """The client-facing text of an exception: no traceback, no source excerpt, no host path."""
    if isinstance(exc, SanicException):
        return _SANIC_MESSAGES.get(int(exc.status_code), str(exc))
    if not isinstance(exc, CorralError):
        # A bug's text may hold anything (paths, values from the environment): the log has it.
        return INTERNAL_MESSAGE
    message = getattr(exc, "message", None)
    text = message if isinstance(message, str) and message else str(exc) or type(exc).__name__
    return strip_paths(text)


INTERNAL_MESSAGE = "internal error; the server log has the details"

# An absolute path: after a start, a space, a quote or '=' (not a URL's path, which follows its host),
# with at least two parts; the API's own routes are not host paths.
_ABSOLUTE = re.compile(r"""(?<![^\s'"=(])/(?!(?:api|v1|v2)/)[^\s'"`,;:()<>]*/[^\s'"`,;:()<>]*""")


def strip_paths(text: str) -> str:
    """`text` with each absolute host path cut to its last part: `/home/u/m/x.gguf` -> `x.gguf`."""
    return _ABSOLUTE.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "/", text)


def headers_of(exc: BaseException) -> dict[str, str]:
    """Extra response headers an error carries."""
    if isinstance(exc, ServerBusyError):
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if isinstance(exc, RateLimitedError):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, UnauthorizedError):
        return {"WWW-Authenticate": "Bearer"}
    return {}


def openai_type(status: int) -> str:
    """The OpenAI error `type` for a status, as Ollama's middleware chooses it."""
    return {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")


def native_body(exc: BaseException) -> dict[str, Any]:
    """`{"error": "..."}`."""
    return {"error": message_of(exc)}


def openai_body(exc: BaseException) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}`."""
    return {
        "error": {
            "message": message_of(exc),
            "type": openai_type(status_of(exc)),
            "param": getattr(exc, "param", None),
            "code": None,
        }
    }


_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    503: "overloaded_error"}


def anthropic_body(exc: BaseException) -> dict[str, Any]:
    """Anthropic's `{"type": "error", "error": {"type", "message"}}`, the type taken from the status."""
    return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status_of(exc), "api_error"),
                                       "message": message_of(exc)}}


def _log(request: Request, exc: BaseException, status: int) -> None:
    if status >= 500 and not isinstance(exc, (ServerBusyError, SanicException)):
        log.error("%s %s failed", request.method, request.path, exc_info=exc)
    else:
        log.info("%s %s -> %d: %s", request.method, request.path, status, message_of(exc))


def render_native(request: Request, exc: Exception) -> HTTPResponse:
    """The native API's error handler."""
    status = status_of(exc)
    _log(request, exc, status)
    return json_response(native_body(exc), status=status, headers=headers_of(exc))


def render_openai(request: Request, exc: Exception) -> HTTPResponse:
    """The OpenAI API's error handler."""
    status = status_of(exc)
    _log(request, exc, status)
    return json_response(openai_body(exc), status=status, headers=headers_of(exc))


def render_anthropic(request: Request, exc: Exception) -> HTTPResponse:
    """The Anthropic Messages API's error handler."""
    status = status_of(exc)
    _log(request, exc, status)
    return json_response(anthropic_body(exc), status=status, headers=headers_of(exc))


def is_anthropic(path: str) -> bool:
    """Whether a path is the Anthropic Messages API's (it shares /v1 with OpenAI's)."""
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def render_v1(request: Request, exc: Exception) -> HTTPResponse:
    """The /v1 blueprint's error handler: Anthropic's shape under /v1/messages, OpenAI's elsewhere."""
    if is_anthropic(request.path):
        return render_anthropic(request, exc)
    return render_openai(request, exc)


def render_any(request: Request, exc: Exception) -> HTTPResponse:
    """For errors outside both blueprints (an unknown route): the shape of the API the path names."""
    if request.path == "/v1" or request.path.startswith("/v1/"):
        return render_v1(request, exc)
    return render_native(request, exc)
