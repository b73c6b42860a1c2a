"""Errors of the engine: a loaded model failing a request.

Exception tree:

    CorralError                        (corral.errors)
     +-- EngineError                   a model's engine failed a request                       (500)
          +-- WorkerCrashedError       the worker process died; the next request restarts it   (500)
          +-- ContextOverflowError     a prompt does not fit the context window                (400)
          +-- EngineInputError         a request the engine cannot run as given                (400)
          +-- ModelLoadError           llama.cpp could not load the model                      (500)
          +-- ServerBusyError          the queue is full                                       (503)

Errors are rebuilt from their constructor arguments, so they pickle across the worker boundary.
"""

from __future__ import annotations

from typing import ClassVar

from corral.errors import CorralError


class EngineError(CorralError):
    """A model's engine failed a request. `http_status` is what the APIs answer."""

    http_status: ClassVar[int] = 500

class WorkerCrashedError(EngineError):
    """The worker process died (a crash in native code); its requests fail, the next one restarts it."""


class ContextOverflowError(EngineError):
    """A prompt does not fit the context window."""

    http_status = 400


class EngineInputError(EngineError):
    """A request the engine cannot run as given (empty prompt, bad grammar, ...)."""

    http_status = 400


class ModelLoadError(EngineError):
    """llama.cpp could not load the model."""


class ServerBusyError(EngineError):
    """The queue is full (Ollama answers 503 with Retry-After)."""

    http_status = 503
