"""Ollama's CLI habits in `corral run` and its REPL: /save, /load, history, word wrap, `--format` with
a JSON schema, an embedding model's vector, image paths in the prompt, and OLLAMA_HOST.

The REPL runs its real loop (`Repl.loop`) with the lines fed to its `read`, over a real server whose
engines are scripted (tests/server/fakes.py); `corral run` runs as the console script against it.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from corral.cli.client import Client
from corral.cli.exit import UsageError
from corral.cli.inputs import extract_images, parse_format, vector_line
from corral.cli.repl import Repl
from corral.cli.session import ServerSession
from corral.cli.wrap import wrap
from corral.config.settings import Settings, problems
from corral.dsl import parse_modelfile
from corral.store.create import create_model
from tests.ggufs import TinyLlama, write_tiny_llama
from tests.sealed import free_port, sealed_environment
from tests.server.conftest import CPU

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


def corral(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    script = shutil.which("corral") or str(Path(sys.executable).parent / "corral")
    return subprocess.run([script, *args], env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, cwd=cwd)


def repl_over(fake, lines: list[str], model: str = "smol", **options) -> Repl:
    """A REPL on `model` at the fake server that reads `lines`, run to its end."""
    feed = iter(lines)
    client = Client(fake.url)
    repl = Repl(ServerSession(client, model, None), read=lambda _prompt: next(feed), **options)
    try:
        repl.loop()
    finally:
        client.close()
    return repl


# -- word wrap ------------------------------------------------------------------------------------

@pytest.mark.parametrize("pieces, width, shown", [
    (["Hello world"], 20, "Hello world"),
    (["The quick brown fox jumps"], 10, "The quick\nbrown fox\njumps"),
    (["The qu", "ick br", "own f", "ox jumps"], 10, "The quick\nbrown fox\njumps"),  # words split mid-piece
    (["ab cd", "ef gh"], 5, "ab\ncdef\ngh"),  # "cd"+"ef" is one word
    (["a\n", "  indented line"], 20, "a\n  indented line"),  # a real newline keeps the indentation
    (["abcdefghijklmnop qr"], 10, "abcdefghij\nklmnop qr"),  # a word wider than the line is broken
    (["one two  "], 10, "one two"),  # trailing blanks at the end are dropped
    (["exactly10c next"], 10, "exactly10c\nnext"),
    (["x" * 3, " ", "y" * 3], 7, "xxx yyy"),  # a word that ends exactly at the edge stays
    (["x" * 3, " ", "y" * 4], 7, "xxx\nyyyy"),
])
def test_word_wrap_at_a_width(pieces, width, shown):
    assert wrap(pieces, width) == shown


def test_word_wrap_loses_no_word_in_any_split():
    text = "Paris is the capital and most populous city of France, with 2 million residents."
    for cut in range(1, len(text)):
        wrapped = wrap([text[:cut], text[cut:]], 16)
        assert wrapped.split() == text.split()
        assert max(len(line) for line in wrapped.splitlines()) <= 16


# -- --format, images, vectors --------------------------------------------------------------------

REFUSAL = 'error: "smol:latest" does not support images: it is a text-only model, so send the request without images\n'
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_format_is_json_a_schema_inline_or_a_schema_file(tmp_path):
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    assert parse_format("json") == "json"
    assert parse_format(json.dumps(SCHEMA)) == SCHEMA
    assert parse_format(str(tmp_path / "schema.json")) == SCHEMA
    assert parse_format(None) is None


@pytest.mark.parametrize("value, message", [
    ("xml", "--format: 'xml' is neither `json`, a JSON schema nor a file holding one"),
    ('{"type": ', "--format: the schema is not JSON (Expecting value at line 1 column 10)"),
])
def test_a_bad_format_is_a_usage_error(value, message):
    with pytest.raises(UsageError) as raised:
        parse_format(value)
    assert raised.value.message == message


def test_image_paths_in_the_prompt_are_read_and_taken_out(tmp_path):
    (tmp_path / "cat.png").write_bytes(PNG)
    (tmp_path / "my dog.JPG").write_bytes(b"jpeg")
    found = extract_images(f"what is in {tmp_path}/cat.png and '{tmp_path}/my dog.JPG'?")
    assert found.text == "what is in and ?"
    assert found.images == [base64.b64encode(PNG).decode(), base64.b64encode(b"jpeg").decode()]
    assert found.paths == [f"{tmp_path}/cat.png", f"{tmp_path}/my dog.JPG"]


@pytest.mark.parametrize("text", ["describe ./missing.png", "a picture.png", "see /etc/hostname", "no path"])
def test_what_is_not_an_image_file_stays_text(text):
    found = extract_images(text)
    assert (found.text, found.images) == (text, [])


def test_a_relative_image_path_is_read_from_the_folder(tmp_path):
    (tmp_path / "x.webp").write_bytes(b"webp")
    assert extract_images("look ./x.webp", base=tmp_path).images == [base64.b64encode(b"webp").decode()]


def test_a_vector_is_one_line_of_json():
    assert vector_line([0.6, 0.8, 0.0]) == "[0.6,0.8,0.0]"


# -- the REPL over a server -------------------------------------------------------------------------

def test_save_creates_a_model_with_the_session(fake, capsys):
    repl_over(fake, ["/set system You are terse.", "/set parameter temperature 0.5",
                     "/set parameter stop <|a|> <|b|>", "Hi", "/save terse", "/bye"])
    assert "Created new model 'terse'" in capsys.readouterr().out
    shown = fake.client.post("/api/show", json={"model": "terse"}).json()
    assert shown["system"] == "You are terse."
    assert shown["messages"] == [{"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "Hello, world"}]
    assert 'temperature                    0.5' in shown["parameters"]
    assert 'stop                           "<|a|>"' in shown["parameters"]
    # the saved conversation comes before the next one's
    fake.client.post("/api/chat", json={"model": "terse", "messages": [{"role": "user", "content": "Again"}],
                                        "stream": False})
    assert "Hi" in fake.engines.requests[-1].prompt and "Hello, world" in fake.engines.requests[-1].prompt


@pytest.mark.parametrize("line, error", [
    ("/save bad:name:twice", "error: The model name 'bad:name:twice' is invalid"),
])
def test_save_refuses_a_bad_name(fake, capsys, line, error):
    repl_over(fake, [line, "/bye"])
    assert error in capsys.readouterr().err


def test_load_switches_the_model_and_clears_the_conversation(fake, capsys):
    repl = repl_over(fake, ["Hi", "/load nosuch", "/load toolsmodel", "/bye"])
    out, err = capsys.readouterr()
    assert "Loading model 'nosuch'" in out and "Couldn't find model 'nosuch'" in err
    assert "Loading model 'toolsmodel'" in out
    assert repl.session.model == "toolsmodel" and repl.messages == []


def test_history_is_written_unless_turned_off(fake, tmp_path, capsys):
    path = tmp_path / "history"
    repl_over(fake, ["/set verbose", "Hi", "/set nohistory", "secret", "/set history", "/bye"], history_file=path)
    # a line is recorded as it is read, before it runs: `/set history` came while it was off
    assert path.read_text() == "/set verbose\nHi\n/set nohistory\n/bye\n"
    repl_over(fake, ["/bye"], history_file=path)  # appended
    assert path.read_text() == "/set verbose\nHi\n/set nohistory\n/bye\n/bye\n"
    other = tmp_path / "off"
    repl_over(fake, ["Hi", "/bye"], history_file=other, history=False)  # CORRAL_NOHISTORY
    assert not other.exists()
    assert "Set 'nohistory' mode." in capsys.readouterr().out


def test_wordwrap_commands_and_the_help_lists_every_command(fake, capsys):
    repl = repl_over(fake, ["/set nowordwrap", "/?", "/? set", "/bye"])
    out = capsys.readouterr().out
    assert "Set 'nowordwrap' mode." in out and repl.wordwrap is False
    for command in ("/set", "/show", "/load", "/save", "/clear", "/bye", "/?"):
        assert f"  {command}" in out
    for sub in ("parameter", "system", "history", "nohistory", "wordwrap", "nowordwrap", "format json",
                "noformat", "verbose", "quiet", "think", "nothink"):
        assert f"  /set {sub}" in out


def test_the_repl_sends_an_image_and_shows_the_servers_refusal(fake, tmp_path, capsys):
    (tmp_path / "cat.png").write_bytes(PNG)
    repl = repl_over(fake, [f"what is this? {tmp_path}/cat.png", "/bye"])
    _, err = capsys.readouterr()
    assert err == f"Added image '{tmp_path}/cat.png'\n" + REFUSAL
    assert repl.messages == []  # the refused question is not kept


# -- `corral run` against the server ------------------------------------------------------------------

@pytest.fixture
def served(fake, tmp_path) -> dict[str, str]:
    """A sealed environment whose CORRAL_HOST is the fake server."""
    return sealed_environment(tmp_path / "sealed", port=int(fake.url.rsplit(":", 1)[1]))


def test_run_format_sends_the_schema_files_grammar(fake, served, tmp_path):
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    done = corral(served, "run", "smol", "Where?", "--format", str(tmp_path / "schema.json"))
    assert done.returncode == 0, done.stderr
    schema_grammar = fake.engines.requests[-1].grammar
    done = corral(served, "run", "smol", "Where?", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert schema_grammar and "city" in schema_grammar
    assert "city" not in fake.engines.requests[-1].grammar


def test_run_on_an_embedding_model_prints_the_vector(fake, served, tmp_path):
    write_tiny_llama(tmp_path / "emb.gguf", TinyLlama(pooling=1, name="Tiny Embed"))
    definition = parse_modelfile("FROM ./emb.gguf\n", str(tmp_path / "emb.Modelfile")).definition
    create_model(fake.store, "emb", definition, base_dir=tmp_path, options=CPU)
    done = corral(served, "run", "emb", "hello world")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[0.6,0.8,0.0]\n"  # the script's (3, 4, 0), normalized
    assert fake.engines.embedded[-1].inputs == ("hello world",)
    done = corral(served, "run", "emb", "hello world", "--dimensions", "1")
    assert (done.returncode, done.stdout) == (0, "[1.0]\n"), done.stderr  # cut, then normalized again


def test_run_sends_an_image_path_and_prints_the_servers_error(fake, served, tmp_path):
    (tmp_path / "cat.png").write_bytes(PNG)
    done = corral(served, "run", "smol", "what is in ./cat.png", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == "Added image './cat.png'\n" + REFUSAL


def test_ollama_host_finds_the_server_when_corral_host_is_unset(fake, served):
    env = {k: v for k, v in served.items() if k != "CORRAL_HOST"}
    env["OLLAMA_HOST"] = served["CORRAL_HOST"]
    done = corral(env, "list")
    assert done.returncode == 0, done.stderr
    assert "smol:latest" in done.stdout
    env.update(CORRAL_HOST=served["CORRAL_HOST"], OLLAMA_HOST=f"127.0.0.1:{free_port()}")
    done = corral(env, "list")  # CORRAL_HOST wins
    assert done.returncode == 0, done.stderr
    assert "smol:latest" in done.stdout


@pytest.mark.parametrize("environment, host", [
    ({"OLLAMA_HOST": "0.0.0.0:1234"}, "0.0.0.0:1234"),
    ({"CORRAL_HOST": ":99", "OLLAMA_HOST": "0.0.0.0:1234"}, "127.0.0.1:99"),
    ({}, "127.0.0.1:11434"),
])
def test_host_setting_falls_back_to_ollama_host(monkeypatch, environment, host):
    for name in ("CORRAL_HOST", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert Settings().host == host


def test_a_bad_ollama_host_names_both_variables(monkeypatch):
    monkeypatch.delenv("CORRAL_HOST", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", "[::1")
    with pytest.raises(Exception) as raised:
        Settings()
    assert problems(raised.value) == ["CORRAL_HOST or OLLAMA_HOST: Value error, unclosed '[' in host '[::1'"]


# -- in this process, with the real model -------------------------------------------------------------

@pytest.mark.model
def test_save_and_load_without_a_server(tmp_path, smollm2_gguf):
    """No server answers, so the REPL's model runs in `corral run` and /save writes the store itself."""
    from tests.cli.test_run_cli import Terminal, environment, modelfile_text

    (tmp_path / "smol.Modelfile").write_text(modelfile_text(smollm2_gguf))
    env = environment(tmp_path, tmp_path / "models", free_port())
    assert corral(env, "create", "smol", "-f", str(tmp_path / "smol.Modelfile")).returncode == 0
    code, out, err = Terminal(env, "smol").finish(
        "/set system Answer with one word.", "What is the capital of France?", "/save smol-paris",
        "/load nosuch", "/load smol-paris", "/bye")
    assert code == 0, err
    assert "Created new model 'smol-paris'" in out and "Loading model 'smol-paris'" in out
    assert "Couldn't find model 'nosuch'" in err
    shown = corral(env, "show", "smol-paris", "--modelfile").stdout
    assert "SYSTEM Answer with one word." in shown
    assert "MESSAGE user What is the capital of France?" in shown
    assert "MESSAGE assistant" in shown and "Paris" in shown.split("MESSAGE assistant", 1)[1]


class TerminalOut(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_answers_wrap_until_nowordwrap(fake, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10")  # the terminal's width, as shutil reads it first
    monkeypatch.setattr(sys, "stdout", TerminalOut())
    fake.engines.pieces = ["The qu", "ick brown", " fox jumps"]
    repl_over(fake, ["Hi", "/set nowordwrap", "Hi", "/bye"])
    out = sys.stdout.getvalue()
    assert "The quick\nbrown fox\njumps\n\n" in out
    assert "Set 'nowordwrap' mode.\nThe quick brown fox jumps\n\n" in out
