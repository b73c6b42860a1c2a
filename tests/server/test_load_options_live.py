"""A request's num_ctx with the real SmolLM2 (defined with num_ctx 2048): options.num_ctx 4096 is
answered by a worker loaded with 4096, beside the 2048 one, whose stream goes on undisturbed."""

from __future__ import annotations

import threading

import httpx
import ollama
import pytest

from tests.server.smol import serving_smol

pytestmark = pytest.mark.model

MODEL = "smol"


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_gguf):
    with serving_smol(tmp_path_factory.mktemp("load-options"), smollm2_gguf, "corral_load_options",
                      keep_alive="-1") as live:
        yield live


def test_num_ctx_4096_is_answered_by_a_4096_worker_while_a_2048_stream_runs(server):
    client = ollama.Client(host=server.url, timeout=600)
    first = threading.Event()
    finals: list = []

    def stream() -> None:
        for part in client.generate(model=MODEL, prompt="Tell me a long story about the sea.", stream=True,
                                    options={"temperature": 0, "num_predict": 200}):
            first.set()
            if part.done:
                finals.append(part)

    thread = threading.Thread(target=stream)
    thread.start()
    assert first.wait(300)
    reply = client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                        options={"num_ctx": 4096, "num_predict": 4})
    assert reply.done and reply.message.content
    running = httpx.get(server.url + "/api/ps").json()["models"]
    assert sorted(m["context_length"] for m in running) == [2048, 4096]
    assert {m["name"] for m in running} == {"smol:latest"}
    thread.join(300)
    assert finals and finals[0].done_reason in ("stop", "length") and finals[0].eval_count
