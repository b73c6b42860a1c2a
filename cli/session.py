"""How `corral run` reaches a model: one small interface (`Session`), two ways behind it.

* `ServerSession`: a server answers at CORRAL_HOST, so the request goes to its /api/chat;
* `LocalSession`: no server answers, so this process runs the model itself: a runtime built by
  the same `build_runtime` as a server's, and each answer planned and run by the same code
  (corral.runtime.inference), so it is the server's answer; `corral run` then needs no `serve` step.

Either way a model that is not there (a 404 from /api/show, or not in the local store) is pulled
first, through the server or into the store (cli/transfer.py), with its progress shown.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from corral.cli.client import Client, Message, NotFoundError, running_server
from corral.cli.context import settings
from corral.dsl.parameters import ParamValue

if TYPE_CHECKING:  # the runtime loads only when a command runs a model
    from corral.config.settings import Settings
    from corral.runtime.inference import Done

OnText = Callable[[str], None]
Options = Mapping[str, ParamValue]
Think = bool | str | None  # the request's think: None leaves it to the model
Format = str | dict[str, Any] | None  # "json" or a JSON schema


class Session(Protocol):
    """One model, reached through a server or in this process."""

    model: str

    def chat(self, messages: list[Message], options: Options, format: Format, on_text: OnText,
             think: Think = None, on_thinking: OnText | None = None) -> Done:
        """Stream one answer to `on_text` (its thinking to `on_thinking`), then its statistics;
        KeyboardInterrupt stops it (and the generation)."""

    def show(self) -> dict[str, Any]:
        """/api/show's fields for the model (modelfile, parameters, template, system, details, ...)."""

    def embed(self, inputs: list[str], dimensions: int | None = None) -> list[list[float]]:
        """One normalized vector per input (an embedding model), cut to `dimensions` when given."""

    def switch(self, model: str) -> None:
        """Talk to `model` from now on; NotFoundError / ModelNotFoundError when there is none."""

    def save(self, name: str, fields: dict[str, Any]) -> None:
        """Create the model `name` as /api/create's `fields` (from, system, parameters, messages) say."""

    def close(self) -> None: ...


def _json_options(options: Options) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


class ServerSession:
    def __init__(self, client: Client, model: str, keep_alive: str | None):
        self.client = client
        self.model = model
        self.keep_alive = keep_alive

    def chat(self, messages: list[Message], options: Options, format: Format, on_text: OnText,
             think: Think = None, on_thinking: OnText | None = None) -> Done:
        final: dict[str, Any] = {}
        stream = self.client.chat(self.model, messages, options=_json_options(options) or None,
                                  format=format, keep_alive=self.keep_alive, think=think)
        try:
            for chunk in stream:
                thought = chunk.get("message", {}).get("thinking", "")
                if thought and on_thinking is not None:
                    on_thinking(thought)
                piece = chunk.get("message", {}).get("content", "")
                if piece:
                    on_text(piece)
                if chunk.get("done"):
                    final = dict(chunk)
        finally:
            stream.close()  # closes the connection at once on Ctrl-C: the server stops generating
        from corral.runtime.inference import Done

        return Done.from_reply(final)

    def show(self) -> dict[str, Any]:
        return dict(self.client.show(self.model))

    def embed(self, inputs: list[str], dimensions: int | None = None) -> list[list[float]]:
        return self.client.embed(self.model, inputs, keep_alive=self.keep_alive, dimensions=dimensions)

    def switch(self, model: str) -> None:
        self.client.show(model)
        self.model = model

    def save(self, name: str, fields: dict[str, Any]) -> None:
        for _status in self.client.create(name, **fields):
            pass  # an error line raises; the statuses of a create from a stored model are not worth showing

    def close(self) -> None:
        self.client.close()


class _LowerLevel(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _show_runtime_warnings() -> None:
    """The runtime's warnings (a worker restarted, ...) to stderr as `warning: ...`; its INFO stays quiet."""
    root = logging.getLogger("corral")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(_LowerLevel())
        root.addHandler(handler)
        root.setLevel(logging.WARNING)


class LocalSession:
    """The model run by this process, over the runtime a server would build, on one event loop."""

    def __init__(self, model: str, keep_alive: float | None, fetch: Callable[[str], None] | None = None):
        _show_runtime_warnings()
        from corral.runtime.compose import build_runtime
        from corral.store.errors import ModelNotFoundError

        self.model = model
        self.keep_alive = keep_alive
        # The store's models (not CORRAL_LIBRARY's), kept loaded between REPL turns; close()
        # unloads them when the command ends.
        self.runtime = build_runtime(_settings(), serve_library=False, keep_alive=-1.0)
        self.models = self.runtime.models
        try:
            self.models.spec(model)  # ModelNotFoundError before anything loads
        except ModelNotFoundError:
            if fetch is None:
                raise
            fetch(model)  # into the store this runtime reads
            self.models.spec(model)
        # asyncio.Runner turns Ctrl-C into a cancellation of the running answer, then raises
        # KeyboardInterrupt here, so the engine's request is cancelled rather than abandoned.
        self.runner = asyncio.Runner()

    def chat(self, messages: list[Message], options: Options, format: Format, on_text: OnText,
             think: Think = None, on_thinking: OnText | None = None) -> Done:
        return self.runner.run(self._chat(messages, options, format, on_text, think, on_thinking))

    async def _chat(self, messages: list[Message], options: Options, format: Format,
                    on_text: OnText, think: Think = None, on_thinking: OnText | None = None) -> Done:
        """The server's /api/chat without HTTP: the same planning, the same events."""
        from corral.runtime.inference import ChatInput, Done, TextEvent, ThinkingEvent, plan_chat, run

        job = ChatInput(messages=[dict(m) for m in messages], format=format, options=dict(options),
                        think=think)
        done = Done()
        events = run(self.runtime.scheduler, self.models, self.model, self.keep_alive,
                     lambda spec: plan_chat(spec, job))
        async with aclosing(events) as it:
            async for event in it:
                if isinstance(event, TextEvent):
                    on_text(event.text)
                elif isinstance(event, ThinkingEvent) and on_thinking is not None:
                    on_thinking(event.text)
                elif isinstance(event, Done):
                    done = event
        return done

    def show(self) -> dict[str, Any]:
        info = self.models.show(self.model)
        return {"modelfile": info.modelfile, "parameters": info.parameters, "template": info.template,
                "system": info.system, "license": info.license, "details": info.details,
                "model_info": info.model_info, "capabilities": info.capabilities}

    def embed(self, inputs: list[str], dimensions: int | None = None) -> list[list[float]]:
        from corral.runtime.inference import embed, shorten

        result = self.runner.run(embed(self.runtime.scheduler, self.models, self.model, inputs, truncate=True,
                                       normalize=True, keep_alive=self.keep_alive))
        return [shorten(v, dimensions) for v in result.vectors]

    def switch(self, model: str) -> None:
        self.models.spec(model)
        self.model = model

    def save(self, name: str, fields: dict[str, Any]) -> None:
        from corral.store.create import create_from_request

        create_from_request(self.runtime.store, self.models, name, fields)

    def close(self) -> None:
        try:
            self.runner.run(self.runtime.close())
        finally:
            self.runner.close()


def _settings() -> Settings:
    """The CORRAL_* settings a server would read; a bad value is the user's error."""
    return settings("corral run")


def open_session(model: str, keepalive: str | None, insecure: bool = False) -> Session:
    """A session at the server when one answers, else in this process; a model that is in neither
    the store nor the library is pulled first (with a progress display), as Ollama's `run` does."""
    from corral.cli.transfer import pull_model

    s = _settings()
    client = running_server(s.host)
    if client is not None:
        try:
            try:
                client.show(model)  # an unknown model answers 404 here, before a session opens
            except NotFoundError:
                pull_model(s, model, insecure=insecure, server=client)
                client.show(model)
        except BaseException:
            client.close()
            raise
        return ServerSession(client, model, keepalive)
    from corral.config.durations import parse_keep_alive

    return LocalSession(model, parse_keep_alive(keepalive),
                        fetch=lambda name: pull_model(s, name, insecure=insecure, server=None))
