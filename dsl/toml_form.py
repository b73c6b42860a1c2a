"""The TOML form of a definition: the same IR as a Modelfile, read and written, comments included.

    # comments go with the key below them, as in a Modelfile
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
from typing import Any, Sequence

import tomlkit
from tomlkit.items import Array, Comment, Item, String, StringType, Trivia, Whitespace

from corral.dsl.build import Builder, Parsed
from corral.dsl.errors import DefinitionError, Diagnostic, FormatError, did_you_mean
from corral.dsl.ir import ModelDefinition, Node
from corral.dsl.span import Span
from corral.dsl.toml_locate import KeyPath, Locations

_TEXT_KEYS = ("system", "template", "requires", "draft", "renderer", "parser")
KEYS = ("from", "adapters", "projector", "parameters", "template", "system", "messages", "license", "requires",
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

    def comments(self, key: KeyPath, index: int) -> tuple[str, ...]:
        """The comments of item `index` of the array (or table) at `key`; the first item also
        takes those written at the key itself."""
        own = self.where.comments(key, below=False) if index == 0 else ()
        return own + self.where.comments(key + (index,))

    def read(self, doc: dict[str, Any]) -> Parsed:
        b = self.b
        for key, value in doc.items():
            k: KeyPath = (key,)
            if key == "from":
                b.from_attempted = True
                if (s := self.string(k, value)) is not None:
                    b.set_from(s, self.span(k), self.where.comments(k))
            elif key in _TEXT_KEYS:
                if (s := self.string(k, value)) is not None:
                    b.set_text(key, s, self.span(k), self.where.comments(k))  # type: ignore[arg-type]
            elif key == "adapters":
                for i, s in enumerate(self.strings(k, value)):
                    b.add_adapter(s, self.span(k), self.comments(k, i))
            elif key == "projector":
                if (s := self.string(k, value)) is not None:
                    b.set_projector(s, self.span(k), self.where.comments(k))
            elif key == "license":
                for i, s in enumerate(self.strings(k, value)):
                    b.add_license(s, self.span(k), self.comments(k, i))
            elif key == "parameters":
                self.parameters(value)
            elif key == "messages":
                self.messages(value)
            else:
                self.bad(k, "unknown key", did_you_mean(key, KEYS) or f"keys are {', '.join(KEYS)}")
        return b.finish(self.where.trailing_comments)

    def parameters(self, table: Any) -> None:
        if not isinstance(table, dict):
            self.bad(("parameters",), f"expected a table, got {_describe(table)}")
            return
        for i, (name, value) in enumerate(table.items()):
            key = ("parameters", name)
            comments = (self.where.comments(("parameters",), below=False) if i == 0 else ())
            self.b.add_parameter(name, value, self.span(key), self.span(key),
                                 comments + self.where.comments(key), as_text=False, key=_dotted(key))

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
                self.b.add_message(role, content, self.span(("messages", i, "role")), self.span(("messages", i)),
                                   self.comments(("messages",), i))


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
    """The TOML form of a definition, keys in canonical order, messages as [[messages]] tables.

    Each comment goes on the line above the key, array element or message it belongs to (a
    message's inside its [[messages]] table), so reading the text back gives the same comments.
    """
    doc = tomlkit.document()
    _add(doc, "from", d.from_, _string(d.from_.value))
    if d.adapters:
        _add(doc, "adapters", None, _strings([a.value for a in d.adapters], [a.comments for a in d.adapters]))
    if d.projector is not None:
        _add(doc, "projector", d.projector, _string(d.projector.value))
    for key in ("template", "system"):
        node = getattr(d, key)
        if node is not None:
            _add(doc, key, node, _string(node.value))
    if d.licenses:
        _add(doc, "license", None, _strings([x.value for x in d.licenses], [x.comments for x in d.licenses]))
    for key in ("requires", "draft", "renderer", "parser"):
        node = getattr(d, key)
        if node is not None:
            _add(doc, key, node, _string(node.value))
    if d.parameters:
        table = tomlkit.table()
        for p in d.parameters:
            value = p.value
            _add(table, p.name, p, _strings(value) if isinstance(value, tuple) else tomlkit.item(value))
        doc.add("parameters", table)
    if d.messages:
        messages = tomlkit.aot()
        for m in d.messages:
            table = tomlkit.table()
            _add(table, "role", m, _string(m.role))
            table.add("content", _string(m.content))
            messages.append(table)
        doc.add("messages", messages)
    for c in d.trailing_comments:
        doc.add(_comment(c, "\n"))
    return tomlkit.dumps(doc)


def _add(container: Any, key: str, node: Node | None, value: Item) -> None:
    for c in node.comments if node is not None else ():
        container.add(_comment(c, "\n"))
    container.add(key, value)


def _comment(text: str, trail: str) -> Comment:
    if not text.startswith("#") or any(ch != "\t" and (ord(ch) < 0x20 or ch == "\x7f") for ch in text):
        raise FormatError(f"the comment {text[:40]!r} cannot be written in TOML: a comment is one line "
                          "that starts with #")
    return Comment(Trivia(comment_ws="", comment=text, trail=trail))


def _strings(values: Sequence[str], comments: Sequence[tuple[str, ...]] = ()) -> Array:
    """A one-line array, or, when any element has comments, one element a line below them."""
    if not any(comments):
        array = tomlkit.array()
        array.extend(_string(v) for v in values)
        return array
    body: list[Item] = []
    for value, above in zip(values, comments):
        for c in above:
            body += [Whitespace("\n    "), _comment(c, "")]
        body += [Whitespace("\n    "), _string(value), Whitespace(",")]
    return Array([*body, Whitespace("\n")], Trivia(), multiline=True)


# What a basic string must escape (tab and, in a multi-line string, newline are written as they are).
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\f": "\\f", "\r": "\\r", "\n": "\\n"}


def _string(value: str) -> String:
    """A basic string; one with a line break as \"\"\" with its text starting on the next line."""
    multiline = "\n" in value
    body = "".join(ch if ch == "\t" or (multiline and ch == "\n") else _ESCAPES.get(ch) or
                   (f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ch == "\x7f" else ch) for ch in value)
    if multiline:
        return String(StringType.MLB, value, "\n" + body, Trivia())
    return String(StringType.SLB, value, body, Trivia())


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
