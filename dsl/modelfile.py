"""The Modelfile front end: text -> statements (syntax.py) -> IR (build.py)."""

from __future__ import annotations

from corral.dsl.build import Builder, Parsed
from corral.dsl.decode import normalize
from corral.dsl.syntax import Statement, closest_command, parse_syntax, unknown_command

_TEXT_FIELDS = {"TEMPLATE": "template", "SYSTEM": "system", "REQUIRES": "requires",
                "DRAFT": "draft", "RENDERER": "renderer", "PARSER": "parser"}


def parse_modelfile(text: str, path: str = "<string>") -> Parsed:
    """Parse Modelfile text into the IR, raising DefinitionError with every error found."""
    text = normalize(text)
    syntax = parse_syntax(text, path)
    builder = Builder(path, syntax.lines, "modelfile")
    builder.extend(syntax.diagnostics)
    builder.from_attempted = "FROM" in syntax.valueless
    for st in syntax.statements:
        _apply(builder, st)
    return builder.finish(syntax.trailing_comments)


def _apply(b: Builder, st: Statement) -> None:
    kw = st.keyword
    if not st.known:
        d = unknown_command(st.keyword, st.keyword_span)
        b.error(d.message, d.span, d.hint)
        b.from_attempted |= closest_command(st.keyword) == "FROM"
    elif kw == "FROM":
        b.set_from(st.value, st.value_span, st.comments)
    elif kw == "PARAMETER":
        assert st.argument is not None and st.argument_span is not None
        b.add_parameter(st.argument, st.value, st.argument_span, st.value_span, st.comments, as_text=True)
    elif kw == "MESSAGE":
        assert st.argument is not None and st.argument_span is not None
        b.add_message(st.argument, st.value, st.argument_span, st.span, st.comments)
    elif kw == "ADAPTER":
        b.add_adapter(st.value, st.value_span, st.comments)
    elif kw == "PROJECTOR":
        b.set_projector(st.value, st.value_span, st.comments)
    elif kw == "LICENSE":
        b.add_license(st.value, st.value_span, st.comments)
    else:
        b.set_text(_TEXT_FIELDS[kw], st.value, st.value_span, st.comments)  # type: ignore[arg-type]
