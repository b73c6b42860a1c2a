"""Errors of the engine: a loaded model failing a request.

Exception tree:

    CorralError                        (corral.errors)
     +-- EngineError                   a model's engine failed a request
          +-- WorkerCrashedError       the worker process died; the next request restarts it
          +-- ContextOverflowError     a prompt does not fit the context window
          +-- EngineInputError         a request the engine cannot run as given
          +-- ModelLoadError           llama.cpp could not load the model
          +-- ServerBusyError          the queue is full

Which HTTP status each answers is the server's choice (corral.server.errors.STATUS).
Errors are rebuilt from their constructor arguments, so they pickle across the worker boundary.
"""

from __future__ import annotations

from corral.errors import CorralError


class EngineError(CorralError):
    """A model's engine failed a request."""


class WorkerCrashedError(EngineError):
    """The worker process died (a crash in native code); its requests fail, the next one restarts it."""


class ContextOverflowError(EngineError):
    """A prompt does not fit the context window."""


class EngineInputError(EngineError):
    """A request the engine cannot run as given (empty prompt, bad grammar, ...)."""


class ModelLoadError(EngineError):
    """llama.cpp could not load the model."""


class ServerBusyError(EngineError):
    """The queue is full (Ollama answers 503 with Retry-After)."""
