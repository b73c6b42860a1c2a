"""Every mistake gets its own message, at its exact line and column, rendered like a compiler's."""

from __future__ import annotations

import pickle

import pytest

from corral.dsl import DefinitionError, parse_modelfile, parse_toml


def errors_of(text: str, path: str = "m.Modelfile") -> DefinitionError:
    parse = parse_toml if path.endswith(".toml") else parse_modelfile
    with pytest.raises(DefinitionError) as e:
        parse(text, path)
    return e.value


@pytest.mark.parametrize(
    "text, rendered",
    [
        (
            "FROM ./m.gguf\nPARAMETER temprature 0.2\n",
            "m.Modelfile:2:11: error: unknown parameter 'temprature'\n"
            "  2 | PARAMETER temprature 0.2\n"
            "    |           ^~~~~~~~~~\n"
            "hint: did you mean 'temperature'?",
        ),
        (
            "FORM ./m.gguf\n",
            "m.Modelfile:1:1: error: unknown command 'FORM'\n"
            "  1 | FORM ./m.gguf\n"
            "    | ^~~~\n"
            "hint: did you mean 'FROM'?",
        ),
        (
            'FROM x\nSYSTEM """You are\n  helpful.\n\nPARAMETER top_k 1\n',
            'm.Modelfile:2:8: error: unterminated """ value: the quote opened here is never closed\n'
            '  2 | SYSTEM """You are\n'
            "    |        ^~~\n"
            'hint: end the value with """; only spaces may follow the closing """ on its line',
        ),
        (
            "FROM x\nPARAMETER top_p 1.5\n",
            "m.Modelfile:2:17: error: parameter 'top_p': top_p must be between 0 and 1, got 1.5\n"
            "  2 | PARAMETER top_p 1.5\n"
            "    |                 ^~~\n"
            "hint: top_p is a number: nucleus sampling probability mass",
        ),
        (
            "FROM x\nMESSAGE usr hello\n",
            "m.Modelfile:2:9: error: invalid message role 'usr'\n"
            "  2 | MESSAGE usr hello\n"
            "    |         ^~~\n"
            "hint: did you mean 'user'?",
        ),
        (
            "SYSTEM hi\n",
            "m.Modelfile:1:1: error: no FROM: a definition must say where its weights come from\n"
            "  1 | SYSTEM hi\n"
            "    | ^\n"
            "hint: add a line such as `FROM ./model.gguf` or `FROM llama3.2`",
        ),
        (
            "FROM x\nPARAMETER use_mmap yes\n",
            "m.Modelfile:2:20: error: parameter 'use_mmap': expected true or false, got 'yes'\n"
            "  2 | PARAMETER use_mmap yes\n"
            "    |                    ^~~\n"
            "hint: use_mmap is true or false: memory-map the weights instead of reading them",
        ),
        (
            'from = "x"\n[parameters]\ntemperature = "hot"\n',
            "m.toml:3:15: error: parameters.temperature: expected a number, got the string 'hot'\n"
            '  3 | temperature = "hot"\n'
            "    |               ^\n"
            "hint: temperature is a number: sampling temperature (0: greedy)",
        ),
    ],
)
def test_rendered_error(text, rendered):
    path = "m.toml" if text.startswith("from =") else "m.Modelfile"
    assert str(errors_of(text, path)) == rendered


def test_every_error_is_reported_in_source_order():
    e = errors_of(
        "FROM x\n"
        "PARAMETER temprature 1\n"
        "FORM y\n"
        "PARAMETER num_ctx big\n"
        "MESSAGE robot hi\n"
        "PARAMETER te-mp 1\n"
        "LICENSE\n"
    )
    assert [(d.span.line, d.span.column, d.message) for d in e.diagnostics] == [
        (2, 11, "unknown parameter 'temprature'"),
        (3, 1, "unknown command 'FORM'"),
        (4, 19, "parameter 'num_ctx': expected an integer, got 'big'"),
        (5, 9, "invalid message role 'robot'"),
        (6, 13, "invalid character '-' in parameter 'te-mp'"),
        (7, 1, "LICENSE needs a value"),
    ]


@pytest.mark.parametrize(
    "text, messages",
    [
        ("FROM\n", ["FROM needs a value"]),  # a FROM was written: no "no FROM" on top of it
        ("from\nPARAMETER temperature 1\n", ["FROM needs a value"]),
        ("FORM x\n", ["unknown command 'FORM'"]),  # meant as FROM
        ("FROMM x\n", ["unknown command 'FROMM'"]),
        ("SYSTM x\n", ["unknown command 'SYSTM'", "no FROM: a definition must say where its weights come from"]),
        ("MESSAGE\n", ["MESSAGE needs a value", "no FROM: a definition must say where its weights come from"]),
    ],
)
def test_a_broken_from_is_not_also_a_missing_one(text, messages):
    assert [d.message for d in errors_of(text).diagnostics] == messages


def test_error_fields_describe_the_first_error():
    e = errors_of("FROM x\nPARAMETER top_k -3\n")
    assert (e.path, e.line, e.column) == ("m.Modelfile", 2, 17)
    assert e.message == "parameter 'top_k': top_k must be at least 0, got -3"
    assert e.hint == "top_k is an integer: sample from the k most likely tokens (0: off)"
    assert e.excerpt.splitlines()[1].endswith("^~")


def test_errors_pickle_across_process_boundaries():
    e = errors_of("FROM x\nPARAMETER temprature 1\n")
    clone = pickle.loads(pickle.dumps(e))
    assert str(clone) == str(e) and clone.diagnostics == e.diagnostics


@pytest.mark.parametrize(
    "text, message",
    [
        ('from = "x"\nfrom_ = 1\n', "from_: unknown key"),
        ('from = 3\n', "from: expected a string, got the number 3"),
        ('from = "x"\nlicense = 3\n', "license: expected a string or a list of strings, got the number 3"),
        ('from = "x"\nparameters = 3\n', "parameters: expected a table, got the number 3"),
        ('from = "x"\n[parameters]\nnum_ctx = 1.5\n', "parameters.num_ctx: expected an integer, got the number 1.5"),
        ('from = "x"\n[parameters]\nuse_mmap = "true"\n', "parameters.use_mmap: expected true or false, got the string 'true'"),
        ('from = "x"\n[parameters]\nstop = [1]\n', "parameters.stop: expected a string or a list of strings, got a list"),
        ('from = "x"\n[parameters]\ntemprature = 1\n', "unknown parameter 'temprature'"),
        ('from = "x"\n[[messages]]\nrole = "user"\n', "messages[0].content: expected a string, got nothing"),
        ('from = "x"\n[[messages]]\nrole = "user"\ncontent = "a"\nname = "x"\n', "messages[0].name: unknown key"),
        ('from = "x"\nsystem = "a\\u0007b"\n', "control character U+0007 is not allowed in text"),
        ('from = "x"\nsystem = \n', "invalid TOML: invalid value"),
        ('system = "x"\n', "no FROM: a definition must say where its weights come from"),
    ],
)
def test_toml_errors(text, message):
    assert errors_of(text, "m.toml").message == message


def test_toml_error_positions_follow_tables_and_arrays():
    e = errors_of('from = "x"\n\n[[messages]]\nrole = "user"\ncontent = "a"\n\n[[messages]]\nrole = "bot"\ncontent = "b"\n',
                  "m.toml")
    assert (e.line, e.column) == (8, 8)
