"""The IR -> canonical Modelfile text.

Canonical form: commands upper-case in a fixed order (FROM, ADAPTER, PROJECTOR, PARAMETER in given order,
TEMPLATE, SYSTEM, MESSAGE, LICENSE, REQUIRES, then the commands Corral keeps but does not act on),
comments kept with the command they precede, and each value written in the plainest spelling that
parses back to the same text: bare, then (for one line) "…", then \"\"\"…\"\"\".
"""

from __future__ import annotations

import re

from corral.dsl.errors import FormatError
from corral.dsl.ir import ModelDefinition, Node, Text
from corral.dsl.parameters import value_to_text

# A closing quote ends a value only where the rest of its line is blank (see the grammar).
_PREMATURE = {q: re.compile(re.escape(q) + r"[ \t]*\n") for q in ('"', '"""')}


def quote(value: str) -> str:
    """The plainest Modelfile spelling of `value` that parses back to exactly `value`."""
    if _bare_ok(value):
        return value
    order = ('"""', '"') if "\n" in value else ('"', '"""')
    for q in order:
        if _quoted_ok(value, q):
            return f"{q}{value}{q}"
    raise FormatError(
        f"the value {value[:40]!r}... cannot be written in a Modelfile: it holds a closing quote "
        "followed by a line break in every quoting form",
        hint="keep this definition in the TOML form",
    )


def _bare_ok(value: str) -> bool:
    return (value != "" and "\n" not in value and not value.startswith('"')
            and value == value.strip())


def _quoted_ok(value: str, q: str) -> bool:
    if q == '"' and (q + value + q).startswith('"""'):
        return False  # it would open a triple-quoted value instead
    return _PREMATURE[q].search(value) is None


def format_modelfile(d: ModelDefinition) -> str:
    """Canonical Modelfile text for a definition (ends with a newline)."""
    out: list[str] = []

    def emit(node: Node, line: str) -> None:
        out.extend(node.comments)
        out.append(line)

    emit(d.from_, f"FROM {quote(d.from_.value)}")
    for a in d.adapters:
        emit(a, f"ADAPTER {quote(a.value)}")
    if d.projector is not None:
        emit(d.projector, f"PROJECTOR {quote(d.projector.value)}")
    for p in d.parameters:
        if isinstance(p.value, tuple):
            lines = [f"PARAMETER {p.name} {quote(s)}" for s in p.value]
            out.extend(p.comments)
            out.extend(lines)
        else:
            emit(p, f"PARAMETER {p.name} {quote(value_to_text(p.value))}")
    _optional(emit, "TEMPLATE", d.template)
    _optional(emit, "SYSTEM", d.system)
    for m in d.messages:
        emit(m, f"MESSAGE {m.role} {quote(m.content)}")
    for lic in d.licenses:
        emit(lic, f"LICENSE {quote(lic.value)}")
    _optional(emit, "REQUIRES", d.requires)
    _optional(emit, "DRAFT", d.draft)
    _optional(emit, "RENDERER", d.renderer)
    _optional(emit, "PARSER", d.parser)
    out.extend(d.trailing_comments)
    return "\n".join(out) + "\n"


def _optional(emit, keyword: str, node: Text | None) -> None:
    if node is not None:
        emit(node, f"{keyword} {quote(node.value)}")
