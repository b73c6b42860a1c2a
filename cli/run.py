"""`corral run MODEL [PROMPT]`: one answer, or the interactive REPL (cli/repl.py).

Two ways to reach a model, behind one small interface (`Session`):

* `ServerSession`: a server answers at CORRAL_HOST, so the request goes to its /api/chat;
* `LocalSession`: no server answers, so this process runs the model itself: a runtime built by
  the same `build_runtime` as a server's, and each answer planned and run by the same code
  (corral.runtime.inference), so it is the server's answer; `corral run` then needs no `serve` step.

Either way a model that is not there (a 404 from /api/show, or not in the local store) is pulled
first, through the server or into the store (cli/transfer.py), with its progress shown.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from corral.cli import output
from corral.cli.client import Client, Message, NotFoundError, running_server
from corral.cli.context import settings
from corral.cli.exit import ExitCode, UsageError
from corral.cli.inputs import extract_images, parse_format, vector_line
from corral.cli.wrap import WordWrap, terminal_width
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="chat with a model (one prompt, or an interactive session)",
                       description="Answer PROMPT and exit, or with no PROMPT open an interactive session "
                       "(a prompt piped on stdin is answered once). Talks to the server at CORRAL_HOST "
                       "when one answers; otherwise runs the model in this process.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("prompt", nargs="*", metavar="PROMPT")
    p.add_argument("--verbose", action="store_true", help="print timings and token rates after each answer")
    p.add_argument("--keepalive", metavar="DURATION",
                   help="how long the server keeps the model loaded afterwards (e.g. 5m, 1h, 0)")
    p.add_argument("--format", metavar="FORMAT",
                   help="answer in JSON: `json`, a JSON schema (`{\"type\": ...}`) or a file holding one")
    p.add_argument("--dimensions", type=_dimensions, metavar="N",
                   help="an embedding model's vector cut to its first N values (normalized again)")
    p.add_argument("--nowordwrap", action="store_true",
                   help="do not wrap the answer at word boundaries to the terminal's width")
    p.add_argument("--insecure", action="store_true", help="pull a missing model over plain http")
    p.add_argument("--think", nargs="?", const="true", metavar="LEVEL",
                   help="think before answering (true, false, low, medium or high; bare --think: true)")
    p.add_argument("--hidethinking", action="store_true", help="think, but show only the answer")
    p.set_defaults(handler=run)


THINK_VALUES: dict[str, Think] = {"true": True, "false": False, "low": "low", "medium": "medium", "high": "high"}


def parse_think(value: str | None) -> Think:
    """`--think`'s value (None when the flag is absent: the model decides)."""
    if value is None:
        return None
    if value.lower() not in THINK_VALUES:
        raise UsageError("corral run", f"--think: invalid value {value!r} (true, false, low, medium or high)")
    return THINK_VALUES[value.lower()]


class ThinkingView:
    """Shows an answer's thinking apart from it, as Ollama does: "Thinking..." and the thinking
    (dimmed on a terminal), "...done thinking." before the answer; `hide` drops the thinking."""

    def __init__(self, hide: bool = False, stream: Any = None):
        self.hide = hide
        self.stream = stream if stream is not None else sys.stdout
        self.dim = bool(getattr(self.stream, "isatty", lambda: False)())
        self.thinking = False

    def _write(self, text: str, dim: bool = False) -> None:
        if dim and self.dim:
            from rich.console import Console

            Console(file=self.stream, soft_wrap=True).print(text, style="dim", end="", markup=False,
                                                            highlight=False)
        else:
            self.stream.write(text)
        self.stream.flush()

    def on_thinking(self, piece: str) -> None:
        if self.hide:
            return
        if not self.thinking:
            self.thinking = True
            self._write("Thinking...\n", dim=True)
        self._write(piece, dim=True)

    def on_text(self, piece: str) -> None:
        self.close()
        self._write(piece)

    def close(self) -> None:
        """End a thinking block still open (the answer starts, or ended with no answer)."""
        if self.thinking:
            self.thinking = False
            self._write("\n...done thinking.\n\n", dim=True)


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


def run(args: argparse.Namespace) -> int:
    from corral.cli import repl
    from corral.config.durations import DurationError, parse_keep_alive

    try:
        parse_keep_alive(args.keepalive)
    except DurationError as e:
        raise UsageError("corral run", f"--keepalive: {e} (a duration such as 30s, 5m or 1h; negative: forever)") from None
    think = parse_think(args.think)
    format = parse_format(args.format)
    prompt = " ".join(args.prompt)
    interactive = not prompt and sys.stdin.isatty()
    if not sys.stdin.isatty():  # a piped prompt comes first, the arguments after it (as Ollama)
        piped = sys.stdin.read()
        prompt = f"{piped}\n{prompt}" if prompt and piped else (piped or prompt)
    if not interactive and not prompt.strip():
        raise UsageError("corral run", "the prompt is empty")
    session = open_session(args.model, args.keepalive, args.insecure)
    try:
        if _embeds_only(session):  # Ollama's run prints an embedding model's vector
            return embed_once(session, prompt, args.dimensions)
        if interactive:
            s = _settings()  # the history file is in the Corral home, the folder above the store
            return repl.Repl(session, verbose=args.verbose, format=format, history=not s.nohistory,
                             history_file=s.models.parent / "history", think=think,
                             hide_thinking=args.hidethinking, wordwrap=not args.nowordwrap).loop()
        return answer_once(session, prompt, verbose=args.verbose, format=format, think=think,
                           hide_thinking=args.hidethinking, wordwrap=not args.nowordwrap)
    except KeyboardInterrupt:
        output.err("")
        return ExitCode.INTERRUPTED
    finally:
        session.close()


def _embeds_only(session: Session) -> bool:
    capabilities = session.show().get("capabilities") or []
    return "embedding" in capabilities and "completion" not in capabilities


def _dimensions(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def embed_once(session: Session, prompt: str, dimensions: int | None = None) -> int:
    """The prompt's vector, as one line of JSON (an interactive session on such a model has no prompt:
    it is a usage error, as chatting with it would be)."""
    if not prompt.strip():
        raise UsageError("corral run", f"{session.model} is an embedding model: give the text to embed "
                         "as the prompt (or on stdin)")
    for vector in session.embed([prompt], dimensions):
        output.out(vector_line(vector))
    return ExitCode.OK


def user_message(text: str) -> Message:
    """The user's message, with the image files its text names read into `images`."""
    found = extract_images(text)
    message: Message = {"role": "user", "content": found.text}
    if found.images:
        message["images"] = found.images
        for path in found.paths:
            output.err(f"Added image '{path}'")
    return message


def answer_once(session: Session, prompt: str, *, verbose: bool, format: Format, think: Think = None,
                hide_thinking: bool = False, wordwrap: bool = True) -> int:
    view = ThinkingView(hide_thinking)
    on_text, flush = wrapped(view.on_text, wordwrap)
    stats = session.chat([user_message(prompt)], {}, format, on_text, think, view.on_thinking)
    flush()
    view.close()
    sys.stdout.write("\n")
    sys.stdout.flush()
    if verbose:
        output.err(render_stats(stats))
    return ExitCode.OK


def wrapped(on_text: OnText, wordwrap: bool) -> tuple[OnText, Callable[[], None]]:
    """`on_text` behind a word wrapper at the terminal's width (when on, and stdout is a terminal),
    and the call that writes the word it still holds."""
    width = terminal_width() if wordwrap else None
    if width is None:
        return on_text, lambda: None
    wrapper = WordWrap(width)

    def flush() -> None:
        rest = wrapper.flush()
        if rest:
            on_text(rest)
    return (lambda piece: on_text(wrapper.feed(piece))), flush


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def go_duration(ns: int) -> str:
    """Go's Duration.String() of nanoseconds ("1.234567s", "45.1ms"), as Ollama prints timings."""
    from corral.config.durations import format_go_duration

    return format_go_duration(ns / 1e9)


def render_stats(s: Done) -> str:
    """Ollama's `--verbose` block."""
    def rate(count: int, ns: int) -> str:
        return f"{count / (ns / 1e9):.2f} tokens/s" if ns > 0 else "n/a"

    return "\n".join([
        f"total duration:       {go_duration(s.total_duration)}",
        f"load duration:        {go_duration(s.load_duration)}",
        f"prompt eval count:    {s.prompt_eval_count} token(s)",
        f"prompt eval duration: {go_duration(s.prompt_eval_duration)}",
        f"prompt eval rate:     {rate(s.prompt_eval_count, s.prompt_eval_duration)}",
        f"eval count:           {s.eval_count} token(s)",
        f"eval duration:        {go_duration(s.eval_duration)}",
        f"eval rate:            {rate(s.eval_count, s.eval_duration)}",
    ])
