"""`corral run` without a server gives the server's answer: one runtime, one request planning.

The same store (SmolLM2, greedy) is run three ways: by a server over HTTP (/api/chat), by the
session `corral run` opens when no server answers (LocalSession, in this process), and by the
`corral run` command itself. Each gets the same request and must give the same text, from the same
number of prompt and answer tokens.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from corral.cli.session import LocalSession
from corral.compiler.compile import CompileOptions
from corral.config.settings import Settings
from corral.dsl import parse_modelfile
from corral.machine.gpus import GpuInventory
from corral.server.app import create_app
from corral.store.create import create_model
from corral.store.store import Store
from tests.cli.test_run_cli import TIMEOUT, corral_script
from tests.sealed import sealed_environment
from tests.server.live import LiveServer

pytestmark = pytest.mark.model

MODELFILE = ("FROM {gguf}\nPARAMETER temperature 0\nPARAMETER num_ctx 1024\nPARAMETER num_predict 24\n"
             "SYSTEM You are a concise assistant. Answer in one short sentence.\n")
CPU = CompileOptions(inventory=GpuInventory(reason="tests run the model on the CPU"), memory_bytes=1 << 40,
                     num_parallel=1)
QUESTION = "What is the capital of France?"
REQUESTS = [
    ([{"role": "user", "content": QUESTION}], {}, None),
    ([{"role": "system", "content": "You answer in JSON."},
      {"role": "user", "content": 'Name the capital of Italy as {"capital": "..."}'}], {"num_predict": 16}, "json"),
    ([{"role": "user", "content": "Count from one to ten in words."}], {"stop": ("five",)}, None),
]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory, smollm2_gguf: Path) -> Path:
    root = tmp_path_factory.mktemp("one-path")
    definition = parse_modelfile(MODELFILE.format(gguf=smollm2_gguf), str(root / "Modelfile")).definition
    create_model(Store(root / "models"), "smol", definition, base_dir=root, options=CPU)
    return root / "models"


@pytest.fixture(scope="module")
def served(store_root: Path) -> list[dict]:
    """The server's non-streamed /api/chat reply to each request."""
    app = create_app(Settings(models=store_root, num_parallel=1, keep_alive="-1"), name="corral_one_path")
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=TIMEOUT) as client:
        replies = []
        for messages, options, fmt in REQUESTS:
            body = {"model": "smol", "messages": messages, "stream": False,
                    "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}}
            if fmt:
                body["format"] = fmt
            reply = client.post("/api/chat", json=body)
            assert reply.status_code == 200, reply.text
            replies.append(reply.json())
    return replies


def test_in_process_run_answers_as_the_server(served, store_root: Path, monkeypatch):
    monkeypatch.setenv("CORRAL_MODELS", str(store_root))
    monkeypatch.setenv("CORRAL_NUM_PARALLEL", "1")
    session = LocalSession("smol", None)
    try:
        for (messages, options, fmt), reply in zip(REQUESTS, served):
            pieces: list[str] = []
            done = session.chat(messages, options, fmt, pieces.append)
            assert "".join(pieces) == reply["message"]["content"]
            # The same prompt and answer tokens (the same requests in the same order: the same cache reuse).
            assert (done.done_reason, done.prompt_eval_count, done.eval_count) == (
                reply["done_reason"], reply["prompt_eval_count"], reply["eval_count"])
    finally:
        session.close()
    assert served[0]["message"]["content"].strip() and "five" not in served[2]["message"]["content"]


def test_the_run_command_answers_as_the_server(served, store_root: Path, tmp_path: Path):
    env = sealed_environment(tmp_path)  # no server at its CORRAL_HOST: the model runs in `corral run`
    env.update(CORRAL_MODELS=str(store_root), CORRAL_NUM_PARALLEL="1")
    done = subprocess.run([corral_script(), "run", "smol", QUESTION], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout == served[0]["message"]["content"] + "\n"
