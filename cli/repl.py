"""The interactive session of `corral run MODEL`, as Ollama's: `>>> `, `\"\"\"` blocks and slash commands.

The conversation lives here (messages, the session's system message, parameters set with `/set`);
each turn sends all of it through a `Session`, which talks to a server or to this process's
engine. Answers go to stdout as they stream; errors to stderr. Ctrl-C stops an answer (and on an
empty line says how to leave), Ctrl-D or `/bye` ends the session. The slash commands are
cli/slash.py's; answers show as cli/answers.py writes them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from corral.cli import output
from corral.cli.client import Message
from corral.cli.context import report
from corral.cli.exit import ExitCode
from corral.cli.answers import ThinkingView, render_stats, user_message, wrapped, write
from corral.cli.session import Format, Session
from corral.cli.slash import Bye, command
from corral.errors import CorralError
from corral.dsl import parameters as P

PROMPT, CONTINUATION, FENCE = ">>> ", "... ", '"""'


class Repl:
    """The session's state (conversation, system message, parameters, modes) and its read-answer loop."""

    def __init__(self, session: Session, *, verbose: bool = False, format: Format = None,
                 read: Callable[[str], str] = input, history: bool = True, think: bool | str | None = None,
                 hide_thinking: bool = False, wordwrap: bool = True, history_file: Path | None = None):
        self.session = session
        self.wordwrap = wordwrap  # wrap answers at the terminal's width (only on a terminal)
        self.lines = History(history_file, history)
        self.think = think  # the request's think (None: the model decides); /set think, /set nothink
        self.hide_thinking = hide_thinking
        self.history = history  # record typed lines in the history file (Settings.nohistory turns it off)
        self.verbose = verbose
        self.format = format
        self.read_line = read
        self.system: str | None = None
        self.messages: list[Message] = []
        self.options: dict[str, P.ParamValue] = {}

    def loop(self) -> int:
        _setup_line_editing(self.lines)
        try:
            while True:
                try:
                    text = self.read()
                except EOFError:  # Ctrl-D
                    write("\n")
                    return ExitCode.OK
                except KeyboardInterrupt:
                    write("\nUse Ctrl + d or /bye to exit.\n")
                    continue
                if not text.strip():
                    continue
                if text.lstrip().startswith("/"):
                    try:
                        command(self, text.strip() if "\n" not in text else text.lstrip())
                    except Bye:
                        return ExitCode.OK
                    continue
                self.ask(text)
        finally:
            self.lines.save()

    def read(self) -> str:
        """One message or command; a `\"\"\"` block (or `/set system \"\"\"...`) spans lines."""
        line = self.read_line(PROMPT)
        self.lines.add(line)
        stripped = line.strip()
        prefix = ""
        if stripped.startswith("/set system ") and stripped[len("/set system "):].lstrip().startswith(FENCE):
            prefix, line = "/set system ", stripped[len("/set system "):].lstrip()
        elif not stripped.startswith(FENCE):
            return line
        body = line.strip()[len(FENCE):]
        if len(line.strip()) >= 2 * len(FENCE) and body.endswith(FENCE):
            return prefix + body[: -len(FENCE)]
        lines = [body] if body else []
        while True:
            more = self.read_line(CONTINUATION)
            self.lines.add(more)
            if more.rstrip().endswith(FENCE):
                lines.append(more.rstrip()[: -len(FENCE)])
                return prefix + "\n".join(lines)
            lines.append(more)

    def ask(self, text: str) -> None:
        try:
            self.messages.append(user_message(text))
        except CorralError as e:  # an image named in it cannot be read
            report(e)
            return
        conversation: list[Message] = ([{"role": "system", "content": self.system}] if self.system else [])
        pieces: list[str] = []
        view = ThinkingView(self.hide_thinking)
        show, flush = wrapped(view.on_text, self.wordwrap)

        def on_text(piece: str) -> None:
            pieces.append(piece)
            show(piece)

        try:
            stats = self.session.chat(conversation + self.messages, self.options, self.format, on_text,
                                      self.think, view.on_thinking)
            flush()
            view.close()
        except KeyboardInterrupt:  # the answer was stopped; forget the question too
            flush()
            self.messages.pop()
            write("\n\n")
            return
        except CorralError as e:
            self.messages.pop()
            if pieces:
                flush()
                write("\n")
            report(e)
            return
        self.messages.append({"role": "assistant", "content": "".join(pieces)})
        write("\n\n")
        if self.verbose:
            output.err(render_stats(stats) + "\n")


HISTORY_LINES = 1000  # lines kept in the history file


class History:
    """The lines typed in the session, appended to the history file when it ends (Ollama keeps
    `~/.ollama/history`; ours is `history` in the Corral home). `/set nohistory` stops recording."""

    def __init__(self, path: Path | None, enabled: bool = True):
        self.path = path
        self.enabled = enabled and path is not None
        self.new: list[str] = []
        self._readline: Any = None

    def add(self, line: str) -> None:
        if self.enabled and line.strip():
            self.new.append(line)

    def enable(self, on: bool) -> None:
        self.enabled = on and self.path is not None
        if self._readline is not None:
            self._readline.set_auto_history(self.enabled)

    def save(self) -> None:
        """Append what was recorded, keeping the file's last HISTORY_LINES lines; a failure is not worth an error."""
        if not self.new or self.path is None:
            return
        try:
            old = self.path.read_text(encoding="utf-8", errors="replace").splitlines() if self.path.exists() else []
            lines = (old + [line.replace("\n", " ") for line in self.new])[-HISTORY_LINES:]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        except OSError:
            pass
        self.new.clear()


def _setup_line_editing(history: History) -> None:
    """Line editing when both ends are a terminal, with the history file's lines to recall (when on)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input() still works
        return
    history._readline = readline
    readline.set_auto_history(history.enabled)
    if history.enabled and history.path is not None:
        try:
            readline.read_history_file(history.path)
        except OSError:
            pass
