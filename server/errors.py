"""Errors as the two HTTP APIs answer them: one status per class, one body shape per API.

Exception tree of the server's own errors (the rest come from the layers below):

    CorralError                        (corral.errors)
     +-- ApiError                      a request the server refuses before reaching the runtime (400)
          +-- BadRequestError          malformed body or a field with a bad value          (400)
          +-- UnsupportedError         the model lacks a capability the request needs       (400)
          +-- NotImplementedByCorral   an Ollama endpoint Corral does not offer (pull, push) (501)

What each error answers (`status_of`):

* anything with an `http_status` class attribute: that status (StoreError and EngineError
  subclasses in corral.store.errors and corral.engine.errors, ApiError here);
* CompileError and DefinitionError (a stored model or definition that cannot compile): 400;
* Sanic's own exceptions (unknown route, wrong method, oversized body): their status;
* anything else is a bug: 500, logged with its traceback.

Bodies: the native API answers `{"error": "<message>"}`, the OpenAI API
`{"error": {"message", "type", "param", "code"}}` with the type taken from the status as Ollama
does. ServerBusyError (503) also sends `Retry-After`.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from sanic import Request
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, json as json_response

from corral.compiler.errors import CompileError
from corral.errors import CorralError
from corral.dsl.errors import DefinitionError
from corral.engine.errors import ServerBusyError

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
"""What a 503 tells the client to wait: the queue moves as fast as the model generates."""


class ApiError(CorralError):
    """A request the server refuses; `message` is what the client sees."""

    http_status: ClassVar[int] = 400

    def __init__(self, message: str, param: str | None = None):
        self.message = message
        self.param = param  # the request field at fault, for the OpenAI error body
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.message, self.param))


class BadRequestError(ApiError):
    """The body is missing, is not JSON, or a field has a value the API does not accept."""


class UnsupportedError(ApiError):
    """The model cannot do what was asked (images for a text-only model, thinking, ...)."""


class NotImplementedByCorral(ApiError):
    """An Ollama endpoint Corral answers only to say why it does not offer it."""

    http_status = 501


_SANIC_MESSAGES = {404: "404 page not found", 405: "405 method not allowed"}


def status_of(exc: BaseException) -> int:
    """The HTTP status an exception answers with."""
    if isinstance(exc, SanicException):
        return int(exc.status_code)
    status = getattr(type(exc), "http_status", None)
    if isinstance(status, int):
        return status
    if isinstance(exc, (CompileError, DefinitionError)):
        return 400
    return 500


def message_of(exc: BaseException) -> str:
    """The client-facing text of an exception (no traceback, no source excerpt)."""
    if isinstance(exc, SanicException):
        return _SANIC_MESSAGES.get(int(exc.status_code), str(exc))
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    return str(exc) or type(exc).__name__


def headers_of(exc: BaseException) -> dict[str, str]:
    """Extra response headers an error carries."""
    if isinstance(exc, ServerBusyError):
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}
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


def render_any(request: Request, exc: Exception) -> HTTPResponse:
    """For errors outside both blueprints (an unknown route): the shape of the API the path names."""
    if request.path == "/v1" or request.path.startswith("/v1/"):
        return render_openai(request, exc)
    return render_native(request, exc)
