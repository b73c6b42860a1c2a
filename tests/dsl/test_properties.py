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


@st.composite
def definitions(draw) -> ModelDefinition:
    names = draw(st.lists(st.sampled_from(sorted(PARAMETERS)), unique=True, max_size=6))
    optional = st.none() | texts.map(lambda v: Text(value=v))
    return ModelDefinition(
        from_=Text(value=draw(nonblank)),
        parameters=tuple(Parameter(name=n, value=draw(param_value(n))) for n in names),
        template=draw(optional),
        system=draw(optional),
        adapters=tuple(Text(value=v) for v in draw(st.lists(nonblank, max_size=2))),
        licenses=tuple(Text(value=v) for v in draw(st.lists(texts, max_size=2))),
        messages=tuple(Message(role=r, content=c) for r, c in draw(st.lists(
            st.tuples(st.sampled_from(["system", "user", "assistant", "tool"]), texts), max_size=3))),
        requires=draw(st.none() | st.sampled_from(["0.5.0", "1.2.3-rc.1", "10.0.0+build.7"]).map(lambda v: Text(value=v))),
        renderer=draw(st.none() | nonblank.map(lambda v: Text(value=v))),
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(definitions())
def test_modelfile_round_trip(d):
    try:
        text = format_modelfile(d)
    except FormatError:
        assume(False)  # a value with a closing quote before a line break in every quoting form
    again = parse_modelfile(text).definition
    assert again == d
    assert format_modelfile(again) == text  # fmt is idempotent


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(definitions())
def test_toml_round_trip(d):
    assert parse_toml(format_toml(d)).definition == d


@settings(max_examples=200)
@given(definitions())
def test_modelfile_to_toml_to_modelfile_is_identical(d):
    try:
        text = format_modelfile(d)
    except FormatError:
        assume(False)
    assert format_modelfile(parse_toml(format_toml(parse_modelfile(text).definition)).definition) == text


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


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_definition_error(data):
    try:
        parse_modelfile(decode(data, "fuzz"), "fuzz")
    except DefinitionError as e:
        str(e)
