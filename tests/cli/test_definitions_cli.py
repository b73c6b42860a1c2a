"""`corral check`, `fmt` and `convert` on real files: output, exit codes, and files left intact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from corral.cli.main import main

GOOD = """# SmolLM2, the demo model
from ./SmolLM2-135M-Instruct.Q4_1.gguf
parameter temperature 0.2
PARAMETER stop <|im_end|>
system \"\"\"You are concise.
Answer in one sentence.\"\"\"
PARAMETER stop "<|endoftext|>"
MESSAGE user Is Toronto in Canada?
MESSAGE assistant Yes.
LICENSE Apache-2.0
"""

CANONICAL = """# SmolLM2, the demo model
FROM ./SmolLM2-135M-Instruct.Q4_1.gguf
PARAMETER temperature 0.2
PARAMETER stop <|im_end|>
PARAMETER stop <|endoftext|>
SYSTEM \"\"\"You are concise.
Answer in one sentence.\"\"\"
MESSAGE user Is Toronto in Canada?
MESSAGE assistant Yes.
LICENSE Apache-2.0
"""

TOML = '''# SmolLM2, the demo model
from = "./SmolLM2-135M-Instruct.Q4_1.gguf"
system = """
You are concise.
Answer in one sentence."""
license = ["Apache-2.0"]

[parameters]
temperature = 0.2
stop = ["<|im_end|>", "<|endoftext|>"]

[[messages]]
role = "user"
content = "Is Toronto in Canada?"

[[messages]]
role = "assistant"
content = "Yes."
'''


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "good": tmp_path / "smol.Modelfile",
        "toml": tmp_path / "smol.toml",
        "bad": tmp_path / "bad.Modelfile",
        "warn": tmp_path / "warn.Modelfile",
    }
    paths["good"].write_text(GOOD)
    paths["toml"].write_text(TOML)
    paths["bad"].write_text("FROM x\nPARAMETER temprature 1\nMESSAGE robot hi\n")
    paths["warn"].write_text("FROM x\nPARAMETER mirostat 1\n")
    return paths


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse usage errors
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "argv, code, out_has, err_has",
    [
        (["check", "{good}"], 0, "smol.Modelfile: ok", ""),
        (["check", "{good}", "{toml}"], 0, "smol.toml: ok", ""),
        (["check", "{warn}"], 0, "warn.Modelfile: ok", "warning: parameter 'mirostat' is deprecated and ignored"),
        (["check", "{good}", "{bad}"], 1, "smol.Modelfile: ok", "bad.Modelfile:2:11: error: unknown parameter 'temprature'"),
        (["check", "{bad}"], 1, "", "bad.Modelfile:3:9: error: invalid message role 'robot'"),
        (["check"], 2, "", "give at least one PATH"),
        (["check", "{missing}"], 2, "", "no such file"),
        (["fmt", "{missing}"], 2, "", "no such file"),
        (["check", "--nope"], 2, "", "unrecognized arguments"),
        (["fmt", "{bad}"], 1, "", "did you mean 'temperature'?"),
        (["convert", "{good}", "--to", "yaml"], 2, "", "invalid choice"),
        (["check", "--parameters"], 0, "temperature", ""),
    ],
)
def test_exit_codes_and_messages(capsys, files, tmp_path, argv, code, out_has, err_has):
    argv = [a.format(missing=tmp_path / "nope", **files) for a in argv]
    got_code, out, err = run(capsys, *argv)
    assert (got_code, out_has in out, err_has in err) == (code, True, True), (out, err)


def test_fmt_prints_canonical_form_and_leaves_the_file(capsys, files):
    assert run(capsys, "fmt", str(files["good"])) == (0, CANONICAL, "")
    assert files["good"].read_text() == GOOD


def test_fmt_write_rewrites_in_place_and_is_idempotent(capsys, files):
    assert run(capsys, "fmt", "--write", str(files["good"]))[0] == 0
    assert files["good"].read_text() == CANONICAL
    assert run(capsys, "fmt", "--write", str(files["good"]))[0] == 0
    assert files["good"].read_text() == CANONICAL
    assert list(files["good"].parent.glob(".*.tmp")) == []


def test_fmt_write_refuses_a_broken_file_and_keeps_it(capsys, files):
    before = files["bad"].read_text()
    assert run(capsys, "fmt", "--write", str(files["bad"]))[0] == 1
    assert files["bad"].read_text() == before


def test_fmt_of_toml_prints_a_modelfile_with_its_comments(capsys, files):
    assert run(capsys, "fmt", str(files["toml"])) == (0, CANONICAL, "")


def test_convert_modelfile_to_toml(capsys, files):
    assert run(capsys, "convert", str(files["good"]), "--to", "toml") == (0, TOML, "")


def test_modelfile_to_toml_to_modelfile_gives_identical_canonical_text(capsys, files, tmp_path):
    _, toml_text, _ = run(capsys, "convert", str(files["good"]), "--to", "toml")
    converted = tmp_path / "back.toml"
    converted.write_text(toml_text)
    _, back, _ = run(capsys, "convert", str(converted), "--to", "modelfile")
    assert back == CANONICAL


def test_fmt_of_toml_keeps_every_comment_and_convert_brings_them_back(capsys, tmp_path):
    toml = tmp_path / "commented.toml"
    toml.write_text('# the weights\nfrom = "./m.gguf" # beside the value\n\n[parameters]\n# greedy\n'
                    'temperature = 0.0\n\n[[messages]]\nrole = "user" # a question\ncontent = "Hi?"\n# the end\n')
    modelfile = ("# the weights\n# beside the value\nFROM ./m.gguf\n# greedy\nPARAMETER temperature 0.0\n"
                 "# a question\nMESSAGE user Hi?\n# the end\n")
    assert run(capsys, "fmt", str(toml)) == (0, modelfile, "")
    converted = tmp_path / "commented.Modelfile"
    converted.write_text(modelfile)
    code, back, _ = run(capsys, "convert", str(converted), "--to", "toml")
    assert code == 0 and back == (
        '# the weights\n# beside the value\nfrom = "./m.gguf"\n\n[parameters]\n# greedy\ntemperature = 0.0\n\n'
        '[[messages]]\n# a question\nrole = "user"\ncontent = "Hi?"\n# the end\n')
    (tmp_path / "again.toml").write_text(back)
    assert run(capsys, "fmt", str(tmp_path / "again.toml")) == (0, modelfile, "")


def test_console_script_version():
    done = subprocess.run([sys.executable, "-m", "corral.cli.main", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("corral ")
