"""The TOML form of a definition: the same IR as a Modelfile, read and written.

    from = "./weights/model.gguf"
    system = "You are concise."
    [parameters]
    temperature = 0.2
    stop = ["<|im_end|>"]
    [[messages]]
    role = "user"
    content = "Is Toronto in Canada?"
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import tomli_w

from corral.dsl.build import Builder, Parsed
from corral.dsl.errors import DefinitionError, Diagnostic, did_you_mean
from corral.dsl.ir import ModelDefinition
from corral.dsl.span import Span
from corral.dsl.toml_locate import KeyPath, Locations

_TEXT_KEYS = ("system", "template", "requires", "draft", "renderer", "parser")
KEYS = ("from", "adapters", "parameters", "template", "system", "messages", "license", "requires",
        "draft", "renderer", "parser")
# tomllib's errors carry their position only in the message text (Python 3.11 has no attributes).
_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


class _Reader:
    def __init__(self, text: str, path: str):
        self.path = path
        self.lines = text.split("\n")
        self.where = Locations(text)
        self.b = Builder(path, self.lines, "toml")

    def span(self, key: KeyPath) -> Span:
        line, col = self.where.find(key)
        return Span(self.path, line, col, line, col + 1)

    def bad(self, key: KeyPath, message: str, hint: str | None = None) -> None:
        self.b.error(f"{_dotted(key)}: {message}", self.span(key), hint)

    def string(self, key: KeyPath, value: Any) -> str | None:
        if isinstance(value, str):
            return value
        self.bad(key, f"expected a string, got {_describe(value)}")
        return None

    def strings(self, key: KeyPath, value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        self.bad(key, f"expected a string or a list of strings, got {_describe(value)}")
        return []

    def read(self, doc: dict[str, Any]) -> Parsed:
        b = self.b
        for key, value in doc.items():
            k: KeyPath = (key,)
            if key == "from":
                b.from_attempted = True
                if (s := self.string(k, value)) is not None:
                    b.set_from(s, self.span(k))
            elif key in _TEXT_KEYS:
                if (s := self.string(k, value)) is not None:
                    b.set_text(key, s, self.span(k))  # type: ignore[arg-type]
            elif key == "adapters":
                for s in self.strings(k, value):
                    b.add_adapter(s, self.span(k))
            elif key == "license":
                for s in self.strings(k, value):
                    b.add_license(s, self.span(k))
            elif key == "parameters":
                self.parameters(value)
            elif key == "messages":
                self.messages(value)
            else:
                self.bad(k, "unknown key", did_you_mean(key, KEYS) or f"keys are {', '.join(KEYS)}")
        return b.finish()

    def parameters(self, table: Any) -> None:
        if not isinstance(table, dict):
            self.bad(("parameters",), f"expected a table, got {_describe(table)}")
            return
        for name, value in table.items():
            key = ("parameters", name)
            self.b.add_parameter(name, value, self.span(key), self.span(key), as_text=False,
                                 key=_dotted(key))

    def messages(self, items: Any) -> None:
        if not isinstance(items, list) or not all(isinstance(m, dict) for m in items):
            self.bad(("messages",), "expected an array of tables ([[messages]] with role and content)")
            return
        for i, m in enumerate(items):
            extra = sorted(set(m) - {"role", "content"})
            for name in extra:
                self.bad(("messages", i, name), "unknown key", "a message has only role and content")
            role = self.string(("messages", i, "role"), m.get("role"))
            content = self.string(("messages", i, "content"), m.get("content"))
            if role is not None and content is not None:
                self.b.add_message(role, content, self.span(("messages", i, "role")), self.span(("messages", i)))


def parse_toml(text: str, path: str = "<string>") -> Parsed:
    """Parse the TOML form into the IR, raising DefinitionError with every error found."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DefinitionError([_syntax_error(e, text, path)]) from None
    return _Reader(text, path).read(doc)


def _syntax_error(e: tomllib.TOMLDecodeError, text: str, path: str) -> Diagnostic:
    message = str(e)
    lines = text.split("\n")
    m = _AT.search(message)
    if m:
        line, col = int(m.group(1)), int(m.group(2))
        message = message[: m.start()].strip()
    else:  # "at end of document"
        line = len(lines)
        col = len(lines[-1]) + 1
        message = message.split(" (at end")[0]
    source = lines[line - 1] if 0 < line <= len(lines) else None
    return Diagnostic(f"invalid TOML: {message[:1].lower()}{message[1:]}", Span(path, line, col, line, col + 1),
                      source_line=source)


def format_toml(d: ModelDefinition) -> str:
    """The TOML form of a definition, keys in canonical order, messages as [[messages]] tables."""
    out: list[str] = [f"from = {_value(d.from_.value)}"]
    if d.adapters:
        out.append(f"adapters = {_value([a.value for a in d.adapters])}")
    for key in ("template", "system"):
        node = getattr(d, key)
        if node is not None:
            out.append(f"{key} = {_value(node.value)}")
    if d.licenses:
        out.append(f"license = {_value([lic.value for lic in d.licenses])}")
    for key in ("requires", "draft", "renderer", "parser"):
        node = getattr(d, key)
        if node is not None:
            out.append(f"{key} = {_value(node.value)}")
    if d.parameters:
        out.append("\n[parameters]")
        out.extend(f"{name} = {_value(value)}" for name, value in d.parameter_dict().items())
    for m in d.messages:
        out.append(f"\n[[messages]]\nrole = {_value(m.role)}\ncontent = {_value(m.content)}")
    return "\n".join(out) + "\n"


def _value(value: Any) -> str:
    """One TOML value as tomli-w spells it (multi-line strings as \"\"\"), lists on one line."""
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}, multiline_strings=True)[len("v = "):].rstrip("\n")


def _dotted(key: KeyPath) -> str:
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__
