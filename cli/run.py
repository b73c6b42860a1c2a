"""`corral run MODEL [PROMPT]`: one answer, or the interactive REPL (cli/repl.py).

Two ways to reach a model, behind one small interface (`Session`):

* `ServerSession`: a server answers at CORRAL_HOST, so the request goes to its /api/chat;
* `LocalSession`: no server answers, so this process runs the model itself, with the same
  scheduler, prompt assembly and engine a server uses; `corral run` then needs no `serve` step.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from corral.cli import output
from corral.cli.client import Client, Message
from corral.cli.context import report
from corral.errors import CorralError
from corral.dsl.parameters import ParamValue

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

OnText = Callable[[str], None]
Options = Mapping[str, ParamValue]


@dataclass(frozen=True)
class Stats:
    """What `--verbose` prints after an answer (nanoseconds and token counts, as Ollama reports)."""

    done_reason: str = "stop"
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0

    @classmethod
    def of(cls, final: Mapping[str, Any]) -> Stats:
        return cls(**{k: final[k] for k in cls.__dataclass_fields__ if final.get(k) is not None})


class Session(Protocol):
    """One model, reached through a server or in this process."""

    model: str

    def chat(self, messages: list[Message], options: Options, format: str | None, on_text: OnText) -> Stats:
        """Stream one answer to `on_text`; KeyboardInterrupt stops it (and the generation)."""

    def show(self) -> dict[str, Any]:
        """/api/show's fields for the model (modelfile, parameters, template, system, details, ...)."""

    def close(self) -> None: ...


def _json_options(options: Options) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


class ServerSession:
    def __init__(self, client: Client, model: str, keep_alive: str | None):
        self.client = client
        self.model = model
        self.keep_alive = keep_alive

    def chat(self, messages: list[Message], options: Options, format: str | None, on_text: OnText) -> Stats:
        final: dict[str, Any] = {}
        stream = self.client.chat(self.model, messages, options=_json_options(options) or None,
                                  format=format, keep_alive=self.keep_alive)
        try:
            for chunk in stream:
                piece = chunk.get("message", {}).get("content", "")
                if piece:
                    on_text(piece)
                if chunk.get("done"):
                    final = dict(chunk)
        finally:
            stream.close()  # closes the connection at once on Ctrl-C: the server stops generating
        return Stats.of(final)

    def show(self) -> dict[str, Any]:
        return dict(self.client.show(self.model))

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
    """The model run by this process: a Scheduler over the store, driven by one event loop."""

    def __init__(self, model: str, keep_alive: float | None):
        _show_runtime_warnings()
        from corral.cli.context import compile_options, store
        from corral.sources.stored import Models
        from corral.runtime.scheduler import Scheduler, SchedulerSettings

        self.model = model
        self.keep_alive = keep_alive
        self.models = Models(store(), compile_options())
        self.models.spec(model)  # ModelNotFoundError before anything loads
        # Keep the model loaded between REPL turns; close() unloads it when the command ends.
        self.scheduler = Scheduler(self.models, SchedulerSettings(keep_alive=-1.0))
        # asyncio.Runner turns Ctrl-C into a cancellation of the running answer, then raises
        # KeyboardInterrupt here, so the engine's request is cancelled rather than abandoned.
        self.runner = asyncio.Runner()

    def chat(self, messages: list[Message], options: Options, format: str | None, on_text: OnText) -> Stats:
        return self.runner.run(self._chat(messages, options, format, on_text))

    async def _chat(self, messages: list[Message], options: Options, format: str | None,
                    on_text: OnText) -> Stats:
        from corral.compiler.templates.prompt import chat_prompt
        from corral.engine.requests import Chunk, Final, GenerateRequest, Sampling

        start = time.monotonic_ns()
        async with self.scheduler.use(self.model, self.keep_alive) as lease:
            spec = lease.spec
            grammar = None
            if format == "json":
                from corral.server.structured import json_grammar

                grammar = json_grammar()
            stop = options.get("stop")
            request = GenerateRequest(
                id=uuid.uuid4().hex, prompt=chat_prompt(spec, messages, None),
                sampling=Sampling.from_options(spec.options, options),
                stop=tuple(stop) if isinstance(stop, tuple) else spec.stop, grammar=grammar,
            )
            final: Final | None = None
            stream = lease.engine.generate(request)
            try:
                async for item in stream:
                    if isinstance(item, Chunk):
                        if item.text:
                            on_text(item.text)
                    elif isinstance(item, Final):
                        final = item
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
        if final is None:
            return Stats(total_duration=time.monotonic_ns() - start, load_duration=lease.load_duration_ns)
        return Stats(final.done_reason, time.monotonic_ns() - start, lease.load_duration_ns,
                     final.prompt_eval_count, final.prompt_eval_duration, final.eval_count, final.eval_duration)

    def show(self) -> dict[str, Any]:
        info = self.models.show(self.model)
        return {"modelfile": info.modelfile, "parameters": info.parameters, "template": info.template,
                "system": info.system, "license": info.license, "details": info.details,
                "model_info": info.model_info, "capabilities": info.capabilities}

    def close(self) -> None:
        try:
            self.runner.run(self.scheduler.close())
        finally:
            self.runner.close()


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
    p.add_argument("--format", choices=["json"], help="answer in JSON")
    p.set_defaults(handler=run)


def open_session(model: str, keepalive: str | None) -> Session:
    """A session at the server when one answers, else in this process."""
    client = Client()
    if client.is_running():
        try:
            client.show(model)  # an unknown model fails here, before a session opens
        except BaseException:
            client.close()
            raise
        return ServerSession(client, model, keepalive)
    client.close()
    from corral.config.durations import parse_keep_alive

    return LocalSession(model, parse_keep_alive(keepalive))


def run(args: argparse.Namespace) -> int:
    from corral.cli import repl
    from corral.config.durations import DurationError, parse_keep_alive

    try:
        parse_keep_alive(args.keepalive)
    except DurationError as e:
        output.err(f"corral run: error: --keepalive: {e} (a duration such as 30s, 5m or 1h; negative: forever)")
        return EXIT_USAGE
    prompt = " ".join(args.prompt)
    interactive = not prompt and sys.stdin.isatty()
    if not sys.stdin.isatty():  # a piped prompt comes first, the arguments after it (as Ollama)
        piped = sys.stdin.read()
        prompt = f"{piped}\n{prompt}" if prompt and piped else (piped or prompt)
    if not interactive and not prompt.strip():
        output.err("corral run: error: the prompt is empty")
        return EXIT_USAGE
    try:
        session = open_session(args.model, args.keepalive)
    except CorralError as e:
        report(e)
        return EXIT_ERROR
    try:
        if interactive:
            return repl.Repl(session, verbose=args.verbose, format=args.format).loop()
        return answer_once(session, prompt, verbose=args.verbose, format=args.format)
    except CorralError as e:
        report(e)
        return EXIT_ERROR
    except KeyboardInterrupt:
        output.err("")
        return EXIT_INTERRUPTED
    finally:
        session.close()


def answer_once(session: Session, prompt: str, *, verbose: bool, format: str | None) -> int:
    stats = session.chat([{"role": "user", "content": prompt}], {}, format, write)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if verbose:
        output.err(render_stats(stats))
    return EXIT_OK


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def go_duration(ns: int) -> str:
    """Go's Duration.String() of nanoseconds ("1.234567s", "45.1ms"), as Ollama prints timings."""
    from corral.config.durations import format_go_duration

    return format_go_duration(ns / 1e9)


def render_stats(s: Stats) -> str:
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
