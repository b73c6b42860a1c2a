"""Ollama's own parser test cases (parser/parser_test.go), as a table: input -> what it means.

Facts from Ollama's tests; the expectations are written against Corral's IR. Where Ollama's
parser accepts a file that its create step then rejects (an unknown parameter), Corral rejects it
at parse time with a position, which the last table records.
"""

from __future__ import annotations

import codecs

import pytest

from corral.dsl import DefinitionError, parse_modelfile
from corral.dsl.decode import decode


def parsed(text: str):
    return parse_modelfile(text, "Modelfile").definition


@pytest.mark.parametrize(
    "text, field, expected",
    [
        # FROM values are trimmed; inner spaces kept; quotes keep leading/trailing spaces.
        ('FROM "     model 1"', "from", "     model 1"),
        ('FROM "FOO  BAR  "', "from", "FOO  BAR  "),
        ("FROM     FOOO BAR    ", "from", "FOOO BAR"),
        ("FROM /what/is/the path ", "from", "/what/is/the path"),
        ("FROM foo", "from", "foo"),
        ("FROM /path/to/model/fp16.bin", "from", "/path/to/model/fp16.bin"),
        ("FROM llama3:latest", "from", "llama3:latest"),
        ("FROM llama3:7b-instruct-q4_K_M", "from", "llama3:7b-instruct-q4_K_M"),
        ("FROM foo\nADAPTER      adapter3", "adapters", ["adapter3"]),
        ('FROM foo\nLICENSE "MIT       "', "licenses", ["MIT       "]),
        ('FROM foo\nTEMPLATE """   {{ .Prompt }}   """', "template", "   {{ .Prompt }}   "),
        ('FROM foo\nTEMPLATE """\n{{ .Prompt }}\n"""', "template", "\n{{ .Prompt }}\n"),
        ('FROM foo\nSYSTEM """\nThis is a\nmultiline system.\n"""', "system", "\nThis is a\nmultiline system.\n"),
        ('FROM foo\nSYSTEM """\nThis is a\nmultiline system."""', "system", "\nThis is a\nmultiline system."),
        ('FROM foo\nSYSTEM """This is a\nmultiline system."""', "system", "This is a\nmultiline system."),
        ('FROM foo\nSYSTEM """This is a multiline system."""', "system", "This is a multiline system."),
        ('FROM foo\nSYSTEM """\nSay "quotes".\n"""', "system", '\nSay "quotes".\n'),
        ('FROM foo\nSYSTEM """"""', "system", ""),
        ('FROM foo\nSYSTEM ""', "system", ""),
        ("FROM foo\nSYSTEM \"'\"", "system", "'"),
        ('FROM foo\nSYSTEM """\'\'"\'""\'""\'"\'\'\'\'\'""\'""\'"""', "system", "''\"'\"\"'\"\"'\"'''''\"\"'\"\"'"),
        ('FROM foo\nSYSTEM "a\nb"', "system", "a\nb"),  # a single-quoted value may span lines
        ("# comment\nFROM foo\n\t", "from", "foo"),
        ("FROM test\n\tSYSTEM 你好👋", "system", "你好👋"),
        ("FROM foo\nSYSTEM #not a comment", "system", "#not a comment"),
        ("FROM foo\nSYSTEM it's fine", "system", "it's fine"),  # single quotes carry no meaning
        ("FROM foo\nTEMPLATE some template", "template", "some template"),
        ("FROM foo\nSYSTEM a\nSYSTEM b", "system", "b"),  # the last one wins
        ("FROM foo\nREQUIRES 0.14.0", "requires", "0.14.0"),
        ("FROM foo\nREQUIRES v0.14.0", "requires", "0.14.0"),
        ("FROM foo\nRENDERER renderer1", "renderer", "renderer1"),
        ("FROM foo\nPARSER parser1", "parser", "parser1"),
        ("FROM base\nDRAFT ./assistant", "draft", "./assistant"),
        ("PARAMETER temperature 1\nFROM foo", "from", "foo"),  # commands in any order
        ("from foo\nsystem lower", "system", "lower"),  # commands are case-insensitive
        ("FrOm foo", "from", "foo"),
    ],
)
def test_values(text, field, expected):
    d = parsed(text)
    node = {"from": d.from_}.get(field, getattr(d, field, None))
    if isinstance(expected, list):
        assert [n.value for n in node] == expected
    else:
        assert node.value == expected


@pytest.mark.parametrize(
    "line, expected",
    [
        ("stop ### User:", ("### User:",)),
        ("stop ### User: ", ("### User:",)),
        ('stop "### User:"', ("### User:",)),
        ('stop "### User: "', ("### User: ",)),
        ('stop """### User:"""', ("### User:",)),
        ('stop """### User:\n"""', ("### User:\n",)),
        ("stop <|endoftext|>", ("<|endoftext|>",)),
        ("stop <|eot_id|>", ("<|eot_id|>",)),
        ("stop </s>", ("</s>",)),
        ("num_ctx 4096", 4096),
        ("num_batch 512", 512),
        ("num_gpu 1", 1),
        ("main_gpu 1", 1),
        ("use_mmap true", True),
        ("use_mmap F", False),
        ("num_thread 4", 4),
        ("num_keep 24", 24),
        ("seed 42", 42),
        ("num_predict 128", 128),
        ("top_k 40", 40),
        ("top_p 0.9", 0.9),
        ("min_p 0.05", 0.05),
        ("typical_p 0.7", 0.7),
        ("repeat_last_n 64", 64),
        ("temperature 0.5", 0.5),
        ("repeat_penalty 1.1", 1.1),
        ("presence_penalty 0.6", 0.6),
        ("frequency_penalty 0.8", 0.8),
        ("param1        1", None),  # unknown: covered by the error table
    ],
)
def test_parameters(line, expected):
    text = f"FROM foo\nPARAMETER {line}\n"
    if expected is None:
        with pytest.raises(DefinitionError):
            parsed(text)
        return
    name = line.split()[0]
    assert parsed(text).parameter(name) == expected


def test_stop_accumulates_in_order_and_other_parameters_last_wins():
    d = parsed("FROM foo\nPARAMETER stop a\nPARAMETER top_k 1\nPARAMETER stop b\nPARAMETER top_k 2\n")
    assert d.parameter("stop") == ("a", "b")
    assert d.parameter("top_k") == 2
    assert [p.name for p in d.parameters] == ["stop", "top_k"]


def test_messages_keep_roles_and_multiline_content():
    d = parsed('FROM foo\nMESSAGE system You are a file parser.\nMESSAGE user Hey there!\n'
               'MESSAGE assistant Hello, I want to parse all the files!\n'
               'MESSAGE system """\nYou are a multiline file parser. Always parse things.\n"""\n')
    assert [(m.role, m.content) for m in d.messages] == [
        ("system", "You are a file parser."),
        ("user", "Hey there!"),
        ("assistant", "Hello, I want to parse all the files!"),
        ("system", "\nYou are a multiline file parser. Always parse things.\n"),
    ]


def test_licenses_accumulate():
    d = parsed('FROM foo\nLICENSE MIT\nLICENSE """Apache\n"Oh look, a quote!"\n"""')
    assert [x.value for x in d.licenses] == ["MIT", 'Apache\n"Oh look, a quote!"\n']


@pytest.mark.parametrize("bom, codec", [(codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
                                        (codecs.BOM_UTF8, "utf-8"), (b"", "utf-8")])
def test_encodings(bom, codec):
    text = "FROM bob\nPARAMETER num_ctx 4096\nSYSTEM You are a utf16 file. 你好👋\n"
    d = parse_modelfile(decode(bom + text.encode(codec), "m"), "m").definition
    assert d.from_.value == "bob" and d.parameter("num_ctx") == 4096
    assert d.system.value == "You are a utf16 file. 你好👋"


def test_crlf_line_ends_are_plain_line_ends():
    d = parsed('FROM foo\r\nSYSTEM """a\r\nb"""\r\nPARAMETER top_k 3\r\n')
    assert d.system.value == "a\nb" and d.parameter("top_k") == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no FROM: a definition must say where its weights come from"),
        ("PARAMETER temperature 1", "no FROM: a definition must say where its weights come from"),
        ("FROM foo\nPARAMETER param1\n", "parameter 'param1' has no value"),
        ("FROM foo\nPARAMETER param1", "parameter 'param1' has no value"),
        ("FROM foo\n\nBADCOMMAND param1 value1", "unknown command 'BADCOMMAND'"),
        ("FROM foo\n\nMESSAGE badguy I'm a bad guy!", "invalid message role 'badguy'"),
        ("FROM foo\nMESSAGE system\n", "MESSAGE system has no value"),
        ("FROM foo\nMESSAGE system", "MESSAGE system has no value"),
        ('FROM foo\nSYSTEM """This is a multiline system.""', 'unterminated """ value: the quote opened here is never closed'),
        ('FROM foo\nSYSTEM "', 'unterminated " value: the quote opened here is never closed'),
        ("FROM foo\nREQUIRES latest", "requires must be a valid semantic version (e.g. 0.5.0), got 'latest'"),
        ("FROM foo\nPARAMETER numa true", "unknown parameter 'numa'"),
        ("FROM foo\nPARAMETER num_gqa 1", "unknown parameter 'num_gqa'"),
        ("FROM foo\nPARAMETER Temperature 1", "unknown parameter 'Temperature'"),  # names keep their case
        ("FROM foo\nPARAMETER temperature 1 # hi", "parameter 'temperature': expected a number, got '1 # hi'"),
    ],
)
def test_errors(text, message):
    with pytest.raises(DefinitionError) as e:
        parsed(text)
    assert e.value.message == message


def test_deprecated_parameters_warn_and_are_dropped():
    result = parse_modelfile("FROM foo\nPARAMETER penalize_newline true\nPARAMETER mirostat 1\n", "m")
    assert result.definition.parameters == ()
    assert [w.message for w in result.warnings] == [
        "parameter 'penalize_newline' is deprecated and ignored",
        "parameter 'mirostat' is deprecated and ignored",
    ]


DOCS = sorted((__import__("pathlib").Path(__file__).parent / "ollama_docs").glob("*.Modelfile"))


@pytest.mark.parametrize("path", DOCS, ids=[p.stem for p in DOCS])
def test_modelfiles_from_ollamas_documentation_pass_check(path, capsys):
    from corral.cli.main import main

    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().err == ""
