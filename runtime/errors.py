"""Errors of request planning: a request the runtime refuses before any model runs.

Exception tree:

    CorralError                        (corral.errors)
     +-- RequestError                  a request that cannot be planned as given
          +-- InvalidRequestError      a field with a value the runtime cannot use (a bad format
                                       or schema, a tool_choice naming no tool)
          +-- UnsupportedRequestError  the model lacks a capability the request needs (images,
                                       thinking, insert)

`param` names the request field at fault (the OpenAI API reports it). Both are the client's
error; the server answers them with 400 (corral.server.errors), `corral run` prints them.
"""

from __future__ import annotations

from corral.errors import CorralError


class RequestError(CorralError):
    """A request the runtime cannot plan; `message` is what the client sees."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param

    def __reduce__(self):
        return (type(self), (self.message, self.param))


class InvalidRequestError(RequestError):
    """A field has a value the runtime cannot use."""


class UnsupportedRequestError(RequestError):
    """The model cannot do what was asked."""
