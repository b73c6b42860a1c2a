"""Comments survive every conversion: Modelfile -> TOML -> Modelfile and TOML -> Modelfile -> TOML."""

from __future__ import annotations

import pytest

from corral.dsl import DefinitionError, format_modelfile, format_toml, parse_modelfile, parse_toml

# Canonical Modelfiles (fmt leaves them as they are), with comments in every place one can go.
MODELFILES = {
    "above FROM": "# the weights\nFROM ./m.gguf\n",
    "several lines": "# one\n#two\n#\n# four  \nFROM ./m.gguf\n",
    "odd text": '# "quoted" # hash """ triple \\ back \ttab ü€ = [x]\nFROM ./m.gguf\n',
    "adapters": "FROM ./m.gguf\n# first\nADAPTER ./a.gguf\nADAPTER ./b.gguf\n# third\n# (really)\nADAPTER ./c.gguf\n",
    "last adapter only": "FROM ./m.gguf\nADAPTER ./a.gguf\n# second\nADAPTER ./b.gguf\n",
    "parameters": "FROM ./m.gguf\n# hot\nPARAMETER temperature 0.9\nPARAMETER top_k 40\n# long\nPARAMETER num_ctx 4096\n",
    "stops": "FROM ./m.gguf\n# the end\n# of a turn\nPARAMETER stop <|im_end|>\nPARAMETER stop <|endoftext|>\n",
    "template and system": ('FROM ./m.gguf\n# Go template\nTEMPLATE """{{ .System }}\n{{ .Prompt }}"""\n'
                            "# persona\nSYSTEM You are concise.\n"),
    "messages": ("FROM ./m.gguf\n# ask\nMESSAGE user Is Toronto in Canada?\nMESSAGE assistant Yes.\n"
                 "# again\nMESSAGE user And Paris?\n"),
    "licenses": 'FROM ./m.gguf\n# MIT\nLICENSE MIT\n# and a long one\nLICENSE """two\nlines"""\n',
    "kept commands": ("FROM ./m.gguf\n# needs\nREQUIRES 0.5.0\n# draft\nDRAFT ./d.gguf\n# renderer\n"
                      "RENDERER r\n# parser\nPARSER p\n"),
    "trailing only": "FROM ./m.gguf\n# the end\n#\n",
    "everywhere": ("# w\nFROM ./m.gguf\n# a\nADAPTER ./a.gguf\n# t\nPARAMETER temperature 0.2\n# s\n"
                   "PARAMETER stop <|im_end|>\n# tpl\nTEMPLATE {{ .Prompt }}\n# sys\nSYSTEM hi\n# u\n"
                   "MESSAGE user hi\n# a\nMESSAGE assistant hello\n# l\nLICENSE MIT\n# r\nREQUIRES 0.5.0\n"
                   "# p\nPARSER x\n# end\n"),
}


@pytest.mark.parametrize("modelfile", MODELFILES.values(), ids=MODELFILES.keys())
def test_modelfile_to_toml_to_modelfile_keeps_comments(modelfile):
    definition = parse_modelfile(modelfile).definition
    assert format_modelfile(definition) == modelfile  # the table holds canonical text
    toml = format_toml(definition)
    assert format_modelfile(parse_toml(toml).definition) == modelfile


@pytest.mark.parametrize("modelfile", MODELFILES.values(), ids=MODELFILES.keys())
def test_toml_to_modelfile_to_toml_is_identical(modelfile):
    toml = format_toml(parse_modelfile(modelfile).definition)
    back = format_toml(parse_modelfile(format_modelfile(parse_toml(toml).definition)).definition)
    assert back == toml


def test_where_comments_go_in_toml():
    modelfile = MODELFILES["everywhere"].replace("ADAPTER ./a.gguf\n", "ADAPTER ./a.gguf\nADAPTER ./b.gguf\n")
    assert format_toml(parse_modelfile(modelfile).definition) == '''# w
from = "./m.gguf"
adapters = [
    # a
    "./a.gguf",
    "./b.gguf",
]
# tpl
template = "{{ .Prompt }}"
# sys
system = "hi"
license = [
    # l
    "MIT",
]
# r
requires = "0.5.0"
# p
parser = "x"

[parameters]
# t
temperature = 0.2
# s
stop = ["<|im_end|>"]

[[messages]]
# u
role = "user"
content = "hi"

[[messages]]
# a
role = "assistant"
content = "hello"
# end
'''


def test_no_comments_gives_the_same_toml_as_before():
    text = "FROM ./m.gguf\nADAPTER ./a.gguf\nADAPTER ./b.gguf\nPARAMETER temperature 0.2\nSYSTEM \"\"\"a\n\tb\"\"\"\n"
    assert format_toml(parse_modelfile(text).definition) == (
        'from = "./m.gguf"\nadapters = ["./a.gguf", "./b.gguf"]\nsystem = """\na\n\tb"""\n\n'
        "[parameters]\ntemperature = 0.2\n")


# Hand-written TOML: comments in places the writer never puts them go with what follows them, or
# with the value they follow on the same line.
HAND_WRITTEN = [
    ('from = "x" # the weights\n', "# the weights\nFROM x\n"),
    ('# above\nfrom = "x"   # beside\n', "# above\n# beside\nFROM x\n"),
    ('from = "x"\n# before the table\n[parameters] # on the header\n# above\ntop_k = 1\n',
     "FROM x\n# before the table\n# on the header\n# above\nPARAMETER top_k 1\n"),
    ('from = "x"\nadapters = [ # the list\n  # a\n  "a", # after a\n  "b#c",\n]\n',
     "FROM x\n# the list\n# a\n# after a\nADAPTER a\nADAPTER b#c\n"),
    ('from = "x"\nadapters = ["a"] # only one\n', "FROM x\n# only one\nADAPTER a\n"),
    ('from = "x"\nlicense = "MIT" # a string, not a list\n', "FROM x\n# a string, not a list\nLICENSE MIT\n"),
    ('from = "x"\n[parameters]\nstop = [\n  # one\n  "a",\n  # two\n  "b",\n]\n',
     "FROM x\n# one\n# two\nPARAMETER stop a\nPARAMETER stop b\n"),
    ('from = "x"\n# before\n[[messages]]\nrole = "user" # who\n# what\ncontent = "hi # not a comment"\n',
     "FROM x\n# before\n# who\n# what\nMESSAGE user hi # not a comment\n"),
    ('from = "x"\nmessages = [ # inline\n  {role = "user", content = "#"}, # first\n  # second\n'
     '  {role = "assistant", content = "b"},\n]\n',
     "FROM x\n# inline\n# first\nMESSAGE user #\n# second\nMESSAGE assistant b\n"),
    ('from = "x"\nsystem = """\n# inside the string\n""" # after it\n# end\n',
     'FROM x\n# after it\nSYSTEM """# inside the string\n"""\n# end\n'),
    ("from = 'x' # literal\ntemplate = '''\n#no\n''' # yes\n", "# literal\nFROM x\n# yes\nTEMPLATE \"\"\"#no\n\"\"\"\n"),
    ('from = "x"\r\n# windows\r\nsystem = "s"\r\n', "FROM x\n# windows\nSYSTEM s\n"),
    ('from = "x"\n[parameters]\n# dropped with it\nmirostat = 1\n# kept\ntop_k = 1\n', "FROM x\n# kept\nPARAMETER top_k 1\n"),
]


@pytest.mark.parametrize("toml, modelfile", HAND_WRITTEN)
def test_comments_in_hand_written_toml(toml, modelfile):
    assert format_modelfile(parse_toml(toml).definition) == modelfile


def test_errors_keep_their_positions_among_comments():
    text = ('# a model\nfrom = "x" # weights\nadapters = [\n  # a\n  "a",\n]\n# sampling\n[parameters] # here\n'
            '# hot\ntemperature = "hot" # oops\n')
    with pytest.raises(DefinitionError) as e:
        parse_toml(text, "m.toml")
    assert str(e.value.diagnostics[0].span) == "m.toml:10:15"
