"""PARSER in a definition: a known thinking format goes into the spec, an unknown one is an error
at its line and column."""

from __future__ import annotations

import pytest

from corral.compiler.errors import CompileError
from corral.compiler.spec import THINKING_PARSERS
from corral.dsl import parse_toml
from corral.compiler.compile import compile_definition
from corral.compiler.resolve import NoModels
from tests.compiler.test_compile import CPU, compile_text, error_of, folder  # noqa: F401 (fixture)


@pytest.mark.parametrize("name", THINKING_PARSERS)
def test_a_known_parser_is_in_the_spec(folder, name):
    assert compile_text(f"FROM ./tiny.gguf\nPARSER {name}\n", folder).parser == name


def test_the_parser_name_is_case_insensitive(folder):
    assert compile_text("FROM ./tiny.gguf\nPARSER Harmony\n", folder).parser == "harmony"


def test_no_parser_is_none(folder):
    assert compile_text("FROM ./tiny.gguf\n", folder).parser is None


def test_an_unknown_parser_names_its_line_and_column(folder):
    e = error_of("FROM ./tiny.gguf\n\nPARSER   qwen4\n", folder)
    assert isinstance(e, CompileError)
    assert str(e) == (f"{folder}/m.Modelfile:3:10: error: unknown PARSER 'qwen4'\n"
                      "hint: one of " + ", ".join(THINKING_PARSERS))


def test_an_unknown_parser_in_toml_names_its_line(folder):
    text = 'from = "./tiny.gguf"\nparser = "nope"\n'
    d = parse_toml(text, str(folder / "m.toml")).definition
    with pytest.raises(CompileError) as e:
        compile_definition(d, name="m", base_dir=folder, resolver=NoModels(), options=CPU)
    assert e.value.message == "unknown PARSER 'nope'" and e.value.span.line == 2


def test_the_parser_changes_the_digest_but_not_the_load(folder):
    plain = compile_text("FROM ./tiny.gguf\n", folder)
    thinking = compile_text("FROM ./tiny.gguf\nPARSER qwen3\n", folder)
    assert thinking.digest != plain.digest and thinking.load_digest == plain.load_digest
