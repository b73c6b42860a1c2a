"""PARSER is acted on now (the compiler checks the name): no "not acted on" warning for it, while
the commands Corral still only keeps (RENDERER) warn; DRAFT is checked by the compiler too."""

from __future__ import annotations

from corral.dsl import format_modelfile, parse_modelfile, parse_toml


def test_parser_is_kept_without_a_warning():
    parsed = parse_modelfile("FROM ./m.gguf\nPARSER qwen3\n", "m.Modelfile")
    assert parsed.definition.parser.value == "qwen3" and parsed.warnings == ()
    assert (parsed.definition.parser.span.line, parsed.definition.parser.span.column) == (2, 8)


def test_renderer_still_warns():
    parsed = parse_modelfile("FROM ./m.gguf\nRENDERER qwen3\n", "m.Modelfile")
    assert [w.message for w in parsed.warnings] == ["RENDERER is accepted but Corral does not act on it yet"]


def test_toml_parser_and_round_trip():
    parsed = parse_toml('from = "./m.gguf"\nparser = "harmony"\n', "m.toml")
    assert parsed.definition.parser.value == "harmony" and parsed.warnings == ()
    assert "PARSER harmony" in format_modelfile(parsed.definition)
