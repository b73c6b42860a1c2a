"""`corral run MODEL [PROMPT]`: its arguments, then one answer, a vector, or the interactive REPL.

The model is reached through a server or in this process (cli/session.py); answers show as
cli/answers.py writes them; the REPL is cli/repl.py.
"""

from __future__ import annotations

import argparse
import sys

from corral.cli import output
from corral.cli.answers import ThinkingView, render_stats, user_message, wrapped
from corral.cli.context import settings
from corral.cli.exit import ExitCode, UsageError
from corral.cli.inputs import parse_format, vector_line
from corral.cli.session import Format, Session, Think, open_session


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
            s = settings("corral run")  # the history file is in the Corral home, the folder above the store
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
