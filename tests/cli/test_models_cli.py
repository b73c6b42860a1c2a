"""`corral create/list/show/cp/rm/render/plan` against a real store, on the real SmolLM2 file."""

from __future__ import annotations

import json

import pytest

from corral.cli.main import main


@pytest.fixture
def env(tmp_path, monkeypatch, smollm2_gguf):
    monkeypatch.setenv("CORRAL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("CORRAL_HOST", "127.0.0.1:9")  # no server there: commands work on the store
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").symlink_to(smollm2_gguf)
    (folder / "Modelfile").write_text(
        "FROM ./SmolLM2-135M-Instruct.Q4_1.gguf\nPARAMETER temperature 0.2\nSYSTEM You are concise.\n")
    return folder


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_create_then_list_show_cp_rm(capsys, env):
    code, out, _ = run(capsys, "create", "smol", "-f", str(env / "Modelfile"))
    assert code == 0
    assert "template: jinja (from the gguf" in out and "created smol:latest" in out
    assert "plan: " in out and "CPU" in out.replace("cpu", "CPU")

    code, out, _ = run(capsys, "list")
    assert code == 0 and "smol:latest" in out and "MiB" in out

    code, out, _ = run(capsys, "show", "smol")
    assert code == 0 and "llama" in out and "Q4_1" in out and "temperature" in out

    assert run(capsys, "show", "smol", "--system")[1] == "You are concise.\n"
    assert "temperature                    0.2" in run(capsys, "show", "smol", "--parameters")[1]
    assert "<|im_start|>" in run(capsys, "show", "smol", "--template")[1]

    assert run(capsys, "cp", "smol", "smol2")[0] == 0
    assert "smol2:latest" in run(capsys, "list")[1]
    assert run(capsys, "rm", "smol")[0] == 0
    listing = run(capsys, "list")[1]
    assert "smol2:latest" in listing and "smol:latest" not in listing


def test_show_modelfile_recreates_the_same_digest(capsys, env, tmp_path):
    run(capsys, "create", "smol", "-f", str(env / "Modelfile"))
    shown = run(capsys, "show", "smol", "--modelfile")[1]
    again = tmp_path / "again.Modelfile"
    again.write_text(shown)
    run(capsys, "create", "smol-again", "-f", str(again))
    rows = {line.split()[0]: line.split()[1] for line in run(capsys, "list")[1].splitlines()[1:]}
    assert rows["smol:latest"] == rows["smol-again:latest"]


def test_render_prints_the_exact_prompt(capsys, env, tmp_path):
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps([{"role": "user", "content": "What is the capital of France?"}]))
    code, out, _ = run(capsys, "render", str(env / "Modelfile"), "--messages", str(messages))
    assert code == 0
    assert out == ("<|im_start|>system\nYou are concise.<|im_end|>\n"
                   "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


def test_render_rejects_a_bad_messages_file(capsys, env, tmp_path):
    messages = tmp_path / "m.json"
    messages.write_text('[{"role": "user", "content": }]')
    code, _, err = run(capsys, "render", str(env / "Modelfile"), "--messages", str(messages))
    assert code == 2 and "m.json:1:30: invalid JSON: Expecting value" in err


def test_plan_prints_a_table_and_says_why_cpu(capsys, env, smollm2_gguf):
    code, out, _ = run(capsys, "plan", str(smollm2_gguf))
    assert code == 0 and "KV cache" in out and "CPU" in out
    assert "no GPU" in out or "NVML" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["show", "nope"], "model 'nope' not found"),
        (["rm", "nope"], "model 'nope' not found"),
        (["cp", "nope", "x"], "model 'nope' not found"),
        (["create", "../x", "-f", "{env}/Modelfile"], "invalid model name '../x'"),
        (["create", "x", "-f", "{env}/Broken.Modelfile"], "Broken.Modelfile:1:6: error: FROM"),
    ],
)
def test_errors(capsys, env, argv, message):
    (env / "Broken.Modelfile").write_text("FROM ./missing.gguf\n")
    code, _, err = run(capsys, *[a.format(env=env) for a in argv])
    assert code == 1 and message in err
