"""The REPL's slash commands, as Ollama's: /set, /show, /save, /load, /clear, /? and /bye.

Each command reads or changes the state of the `Repl` it is given (its system message, parameters,
format, modes and conversation) and writes what it did; a bad command is a message on stderr,
never an error that ends the session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.cli import output
from corral.cli.context import report
from corral.dsl import parameters as P
from corral.dsl.errors import did_you_mean
from corral.errors import CorralError

if TYPE_CHECKING:
    from corral.cli.repl import Repl

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


def command(repl: Repl, text: str) -> None:
    """Run one slash command typed at the prompt; `/bye` raises Bye."""
    words = text.split(None, 2)
    name = words[0]
    if name in ("/bye", "/exit"):
        raise Bye
    if name in ("/?", "/help"):
        topic = words[1] if len(words) > 1 else ""
        helps = {"set": HELP_SET, "show": HELP_SHOW, "shortcuts": HELP_SHORTCUTS, "shortcut": HELP_SHORTCUTS}
        output.out(helps.get(topic, HELP))
    elif name == "/save":
        _save(repl, words[1:])
    elif name == "/load":
        _load(repl, words[1:])
    elif name == "/clear":
        repl.messages.clear()
        output.out("Cleared session context")
    elif name == "/set":
        _set(repl, words[1:])
    elif name == "/show":
        _show(repl, words[1] if len(words) > 1 else "")
    else:
        output.err(f"Unknown command '{name}'. Type /? for help")


def _set(repl: Repl, args: list[str]) -> None:
    """`/set WHAT [VALUE]`: a parameter, the system message, a mode or the answer's format."""
    what = args[0] if args else ""
    rest = args[1] if len(args) > 1 else ""
    if what == "parameter":
        _set_parameter(repl, rest.split())
    elif what == "system":
        if not rest.strip():
            output.err("error: /set system needs the system message (/set system <text>)")
            return
        repl.system = rest.strip() if "\n" not in rest else rest
        output.out("Set system message.")
    elif what in ("history", "nohistory"):
        repl.lines.enable(what == "history")
        output.out(f"Set '{what}' mode.")
    elif what in ("wordwrap", "nowordwrap"):
        repl.wordwrap = what == "wordwrap"
        output.out(f"Set '{what}' mode.")
    elif what == "verbose":
        repl.verbose = True
        output.out("Set 'verbose' mode.")
    elif what == "quiet":
        repl.verbose = False
        output.out("Set 'quiet' mode.")
    elif what == "format":
        from corral.cli.inputs import parse_format

        try:
            repl.format = parse_format(rest.strip()) if rest.strip() else None
        except CorralError as e:
            report(e)
            return
        if repl.format is None:
            output.err("error: /set format needs json, a JSON schema or a schema file")
            return
        output.out("Set format to 'json' mode." if repl.format == "json" else "Set format to a JSON schema.")
    elif what == "noformat":
        repl.format = None
        output.out("Disabled format.")
    elif what == "think":
        level = rest.strip().lower()
        if level not in ("", "low", "medium", "high"):
            output.err(f"error: invalid think level {rest.strip()!r}; use low, medium or high")
            return
        repl.think = level or True
        output.out(f"Set 'think' mode to '{level}'." if level else "Set 'think' mode.")
    elif what == "nothink":
        repl.think = False
        output.out("Set 'nothink' mode.")
    elif not what:
        output.out(HELP_SET)
    else:
        output.err(f"Unknown command '/set {what}'. Type /? for help")


def _save(repl: Repl, args: list[str]) -> None:
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
    fields: dict[str, Any] = {"from": repl.session.model}
    if repl.system:
        fields["system"] = repl.system
    if repl.options:
        fields["parameters"] = {k: list(v) if isinstance(v, tuple) else v for k, v in repl.options.items()}
    if repl.messages:
        fields["messages"] = [{"role": m["role"], "content": m.get("content", "")} for m in repl.messages]
    try:
        repl.session.save(name, fields)
    except CorralError as e:
        report(e)
        return
    output.out(f"Created new model '{name}'")


def _load(repl: Repl, args: list[str]) -> None:
    """`/load NAME`: talk to another model, with the conversation cleared (as Ollama does); the
    system message and parameters stay."""
    if len(args) != 1 or len(args[0].split()) != 1:
        output.out("Usage:\n  /load <modelname>")
        return
    name = args[0].strip()
    output.out(f"Loading model '{name}'")
    try:
        repl.session.switch(name)
    except CorralError as e:
        if "not found" in e.message.lower() or "no model" in e.message.lower():
            output.err(f"Couldn't find model '{name}'")
        else:
            report(e)
        return
    repl.messages.clear()


def _set_parameter(repl: Repl, words: list[str]) -> None:
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
    repl.options[name] = value
    shown = ", ".join(value) if isinstance(value, tuple) else " ".join(values)
    output.out(f"Set parameter '{name}' to '{shown}'")
    if spec.load_time:  # the server ignores these per request too (they would mean a reload)
        output.err(f"note: {name} applies when a model is loaded, so this session ignores it; "
                   f"set it in the model's definition (PARAMETER {name} ...)")


def _show(repl: Repl, what: str) -> None:
    """`/show WHAT`: the model's info, licence, Modelfile, parameters, system message or template."""
    from corral.cli.models import summary

    if what not in ("info", "license", "modelfile", "parameters", "system", "template"):
        output.out(HELP_SHOW)
        return
    try:
        info = repl.session.show()
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
        output.out(repl.system or info.get("system") or "No system message was specified for this model.")
    elif what == "template":
        output.out(info.get("template") or "No prompt template was specified for this model.")
    else:
        model_params = info.get("parameters") or ""
        lines = (["Model defined parameters:", model_params] if model_params
                 else ["No parameters were specified for this model."])
        if repl.options:
            lines += ["", "User defined parameters:"]
            for key, value in repl.options.items():
                shown = ", ".join(value) if isinstance(value, tuple) else P.value_to_text(value)
                lines.append(f"{key:<30} {shown}")
        output.out("\n".join(lines))
