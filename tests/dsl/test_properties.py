"""Properties of the front ends, for any definition and any text (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from corral.dsl import (DefinitionError, FormatError, Message, ModelDefinition, Parameter, Text,
                        format_modelfile, format_toml, parse_modelfile, parse_toml)
from corral.dsl.decode import decode
from corral.dsl.parameters import PARAMETERS

# Text the IR can hold: no control characters but tab and newline; quotes and blanks made likely.
chars = st.characters(blacklist_categories=("Cc", "Cs"), max_codepoint=0x2FFF) | st.sampled_from(
    ["\n", "\t", " ", '"', "'", "#", "\\", "{", "}"])
texts = st.text(chars, max_size=40)
nonblank = texts.filter(lambda s: s.strip() != "")


def param_value(name: str):
    spec = PARAMETERS[name]
    if spec.type == "int":
        return st.integers(int(spec.minimum), int(spec.maximum) if spec.maximum is not None else 2**63 - 1)
    if spec.type == "float":
        return st.floats(spec.minimum, spec.maximum, allow_nan=False, allow_infinity=False)
    if spec.type == "bool":
        return st.booleans()
    return st.lists(texts.filter(bool), min_size=1, max_size=3).map(tuple)


# A comment line as a Modelfile holds it: `#` and the rest of its line.
comments = st.lists(st.text(chars.filter(lambda c: c != "\n"), max_size=20).map("#".__add__), max_size=2).map(tuple)


@st.composite
def definitions(draw) -> ModelDefinition:
    names = draw(st.lists(st.sampled_from(sorted(PARAMETERS)), unique=True, max_size=6))

    def text(value: str) -> Text:
        return Text(value=value, comments=draw(comments))

    optional = st.none() | texts.map(text)
    return ModelDefinition(
        from_=text(draw(nonblank)),
        parameters=tuple(Parameter(name=n, value=draw(param_value(n)), comments=draw(comments)) for n in names),
        template=draw(optional),
        system=draw(optional),
        adapters=tuple(text(v) for v in draw(st.lists(nonblank, max_size=2))),
        licenses=tuple(text(v) for v in draw(st.lists(texts, max_size=2))),
        messages=tuple(Message(role=r, content=c, comments=draw(comments)) for r, c in draw(st.lists(
            st.tuples(st.sampled_from(["system", "user", "assistant", "tool"]), texts), max_size=3))),
        requires=draw(st.none() | st.sampled_from(["0.5.0", "1.2.3-rc.1", "10.0.0+build.7"]).map(text)),
        renderer=draw(st.none() | nonblank.map(text)),
        trailing_comments=draw(comments),
    )


def comments_of(d: ModelDefinition) -> list:
    """Every comment of a definition, with the node it belongs to (equality ignores comments)."""
    nodes = [d.from_, *d.parameters, d.template, d.system, *d.adapters, *d.licenses, *d.messages,
             d.requires, d.draft, d.renderer, d.parser]
    return [n.comments if n is not None else None for n in nodes] + [d.trailing_comments]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(definitions())
def test_modelfile_round_trip(d):
    try:
        text = format_modelfile(d)
    except FormatError:
        assume(False)  # a value with a closing quote before a line break in every quoting form
    again = parse_modelfile(text).definition
    assert again == d and comments_of(again) == comments_of(d)
    assert format_modelfile(again) == text  # fmt is idempotent


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(definitions())
def test_toml_round_trip(d):
    again = parse_toml(format_toml(d)).definition
    assert again == d and comments_of(again) == comments_of(d)


@settings(max_examples=200)
@given(definitions())
def test_modelfile_to_toml_to_modelfile_is_identical(d):
    try:
        text = format_modelfile(d)
    except FormatError:
        assume(False)
    assert format_modelfile(parse_toml(format_toml(parse_modelfile(text).definition)).definition) == text


@settings(max_examples=200)
@given(definitions())
def test_toml_to_modelfile_to_toml_is_identical(d):
    text = format_toml(d)
    try:
        modelfile = format_modelfile(parse_toml(text).definition)
    except FormatError:
        assume(False)
    assert format_toml(parse_modelfile(modelfile).definition) == text


lines = st.one_of(
    texts,
    st.tuples(st.sampled_from(["FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "MESSAGE", "LICENSE", "ADAPTER",
                               "REQUIRES", "from", "parameter", "message", "FORM", "#", ""]),
              st.sampled_from([" ", "\t", "", "  "]), texts).map("".join),
)


@settings(max_examples=500)
@given(st.lists(lines, max_size=8).map("\n".join))
def test_arbitrary_modelfile_text_raises_only_definition_error(text):
    try:
        parse_modelfile(text, "fuzz")
    except DefinitionError as e:
        assert e.diagnostics and all(d.span is not None for d in e.diagnostics)
        str(e)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_arbitrary_toml_text_raises_only_definition_error(text):
    try:
        parse_toml(text, "fuzz.toml")
    except DefinitionError as e:
        str(e)


# TOML lines, comments among them, that often make a valid definition.
_toml_fragments = st.sampled_from([
    "# c", '#"""', "[parameters]", "top_k = 1 # k", 'stop = [ # s', '"a", # a', '"b"', "]",
    "[[messages]]", 'role = "user"', 'content = """', "# in a string?", '"""  # after', "content = 'x#y'",
    'adapters = ["a"] # one', 'license = """', "messages = [{role = 'user', content = '#'}] # m", "",
])
toml_lines = st.one_of(_toml_fragments, _toml_fragments, _toml_fragments, texts)


@settings(max_examples=500)
@given(st.lists(toml_lines, max_size=10).map(lambda lines: "\n".join(['# top', 'from = "x" # w', *lines])))
def test_toml_text_with_comments_keeps_them_through_the_writer(text):
    try:
        d = parse_toml(text, "fuzz.toml").definition
    except DefinitionError as e:
        str(e)
        return
    again = parse_toml(format_toml(d)).definition
    assert again == d and comments_of(again) == comments_of(d)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_definition_error(data):
    try:
        parse_modelfile(decode(data, "fuzz"), "fuzz")
    except DefinitionError as e:
        str(e)
