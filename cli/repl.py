"""The interactive session of `corral run MODEL`, as Ollama's: `>>> `, `\"\"\"` blocks and slash commands.

The conversation lives here (messages, the session's system message, parameters set with `/set`);
each turn sends all of it through a `Session`, which talks to a server or to this process's
engine. Answers go to stdout as they stream; errors to stderr. Ctrl-C stops an answer (and on an
empty line says how to leave), Ctrl-D or `/bye` ends the session.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from corral.cli import output
from corral.cli.client import Message
from corral.cli.context import report
from corral.cli.exit import ExitCode
from corral.cli.run import Format, Session, ThinkingView, render_stats, user_message, wrapped, write
from corral.errors import CorralError
from corral.dsl import parameters as P
from corral.dsl.errors import did_you_mean

PROMPT, CONTINUATION, FENCE = ">>> ", "... ", '"""'

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message."""

HELP_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set format <schema>   Answer to a JSON schema (written inline, or a file)
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think [level]     Think before answering (level: low, medium or high)
  /set nothink           Answer without thinking"""

HELP_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template"""

HELP_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor
  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit (/bye)"""

HELP_PARAMETER = "Parameters:\n" + "\n".join(
    f"  /set parameter {spec.name:<18} {spec.help}" for spec in P.PARAMETERS.values())


class Bye(Exception):
    """`/bye`: leave the loop."""


class Repl:
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

    # -- the loop -----------------------------------------------------------------------------------
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
                        self.command(text.strip() if "\n" not in text else text.lstrip())
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

    # -- slash commands -----------------------------------------------------------------------------
    def command(self, text: str) -> None:
        words = text.split(None, 2)
        name = words[0]
        if name in ("/bye", "/exit"):
            raise Bye
        if name in ("/?", "/help"):
            topic = words[1] if len(words) > 1 else ""
            helps = {"set": HELP_SET, "show": HELP_SHOW, "shortcuts": HELP_SHORTCUTS, "shortcut": HELP_SHORTCUTS}
            output.out(helps.get(topic, HELP))
        elif name == "/save":
            self.save(words[1:])
        elif name == "/load":
            self.load(words[1:])
        elif name == "/clear":
            self.messages.clear()
            output.out("Cleared session context")
        elif name == "/set":
            self.set(words[1:])
        elif name == "/show":
            self.show(words[1] if len(words) > 1 else "")
        else:
            output.err(f"Unknown command '{name}'. Type /? for help")

    def set(self, args: list[str]) -> None:
        what = args[0] if args else ""
        rest = args[1] if len(args) > 1 else ""
        if what == "parameter":
            self.set_parameter(rest.split())
        elif what == "system":
            if not rest.strip():
                output.err("error: /set system needs the system message (/set system <text>)")
                return
            self.system = rest.strip() if "\n" not in rest else rest
            output.out("Set system message.")
        elif what in ("history", "nohistory"):
            self.lines.enable(what == "history")
            output.out(f"Set '{what}' mode.")
        elif what in ("wordwrap", "nowordwrap"):
            self.wordwrap = what == "wordwrap"
            output.out(f"Set '{what}' mode.")
        elif what == "verbose":
            self.verbose = True
            output.out("Set 'verbose' mode.")
        elif what == "quiet":
            self.verbose = False
            output.out("Set 'quiet' mode.")
        elif what == "format":
            from corral.cli.inputs import parse_format

            try:
                self.format = parse_format(rest.strip()) if rest.strip() else None
            except CorralError as e:
                report(e)
                return
            if self.format is None:
                output.err("error: /set format needs json, a JSON schema or a schema file")
                return
            output.out("Set format to 'json' mode." if self.format == "json" else "Set format to a JSON schema.")
        elif what == "noformat":
            self.format = None
            output.out("Disabled format.")
        elif what == "think":
            level = rest.strip().lower()
            if level not in ("", "low", "medium", "high"):
                output.err(f"error: invalid think level {rest.strip()!r}; use low, medium or high")
                return
            self.think = level or True
            output.out(f"Set 'think' mode to '{level}'." if level else "Set 'think' mode.")
        elif what == "nothink":
            self.think = False
            output.out("Set 'nothink' mode.")
        elif not what:
            output.out(HELP_SET)
        else:
            output.err(f"Unknown command '/set {what}'. Type /? for help")

    def save(self, args: list[str]) -> None:
        """`/save NAME`: a model made of this one with the session's system message, parameters and
        conversation, through the same create as /api/create (Ollama's /save)."""
        from corral.store import names

        if len(args) != 1:
            output.out("Usage:\n  /save <modelname>")
            return
        name = args[0].split()[0] if args[0].split() else ""
        if len(args[0].split()) != 1 or not names.is_valid_name(name):
            output.err(f"error: The model name '{args[0].strip()}' is invalid")
            return
        fields: dict[str, Any] = {"from": self.session.model}
        if self.system:
            fields["system"] = self.system
        if self.options:
            fields["parameters"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}
        if self.messages:
            fields["messages"] = [{"role": m["role"], "content": m.get("content", "")} for m in self.messages]
        try:
            self.session.save(name, fields)
        except CorralError as e:
            report(e)
            return
        output.out(f"Created new model '{name}'")

    def load(self, args: list[str]) -> None:
        """`/load NAME`: talk to another model, with the conversation cleared (as Ollama does); the
        system message and parameters stay."""
        if len(args) != 1 or len(args[0].split()) != 1:
            output.out("Usage:\n  /load <modelname>")
            return
        name = args[0].strip()
        output.out(f"Loading model '{name}'")
        try:
            self.session.switch(name)
        except CorralError as e:
            if "not found" in e.message.lower() or "no model" in e.message.lower():
                output.err(f"Couldn't find model '{name}'")
            else:
                report(e)
            return
        self.messages.clear()

    def set_parameter(self, words: list[str]) -> None:
        """`/set parameter NAME VALUE...`, checked against the same table as Modelfiles."""
        if len(words) < 2:
            output.out("Usage:\n  /set parameter <name> <value>\n\n" + HELP_PARAMETER)
            return
        name, values = words[0], words[1:]
        if name in P.DEPRECATED:
            output.err(f"warning: parameter {name!r} is deprecated and ignored")
            return
        spec = P.PARAMETERS.get(name)
        if spec is None:
            hint = did_you_mean(name, P.PARAMETERS) or "`/set parameter` lists the parameters"
            output.err(f"error: unknown parameter {name!r}\nhint: {hint}")
            return
        try:
            if spec.type == "str_list":
                value = P.check(spec, tuple(values))
            elif len(values) > 1:
                raise P.ParamValueError(f"expected one value, got {len(values)}")
            else:
                value = P.parse_text(spec, values[0])
        except P.ParamValueError as e:
            output.err(f"error: parameter {name!r}: {e}\nhint: {name} is {P.kind(spec)}: {spec.help}")
            return
        self.options[name] = value
        shown = ", ".join(value) if isinstance(value, tuple) else " ".join(values)
        output.out(f"Set parameter '{name}' to '{shown}'")
        if spec.load_time:  # the server ignores these per request too (they would mean a reload)
            output.err(f"note: {name} applies when a model is loaded, so this session ignores it; "
                       f"set it in the model's definition (PARAMETER {name} ...)")

    def show(self, what: str) -> None:
        from corral.cli.models import summary

        if what not in ("info", "license", "modelfile", "parameters", "system", "template"):
            output.out(HELP_SHOW)
            return
        try:
            info = self.session.show()
        except CorralError as e:
            report(e)
            return
        if what == "info":
            output.out(summary(info))
        elif what == "modelfile":
            output.out(info.get("modelfile", ""))
        elif what == "license":
            output.out(info.get("license") or "No license was specified for this model.")
        elif what == "system":
            output.out(self.system or info.get("system") or "No system message was specified for this model.")
        elif what == "template":
            output.out(info.get("template") or "No prompt template was specified for this model.")
        else:
            model_params = info.get("parameters") or ""
            lines = (["Model defined parameters:", model_params] if model_params
                     else ["No parameters were specified for this model."])
            if self.options:
                lines += ["", "User defined parameters:"]
                for key, value in self.options.items():
                    shown = ", ".join(value) if isinstance(value, tuple) else P.value_to_text(value)
                    lines.append(f"{key:<30} {shown}")
            output.out("\n".join(lines))


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
