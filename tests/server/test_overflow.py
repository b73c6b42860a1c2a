"""Context overflow with the real SmolLM2 (num_ctx 2048): a request shaped like Open WebUI's first
chat (36 tool definitions and a long history, far over the window) is answered, old messages and
then prompt tokens dropped as Ollama drops them; truncate false is a 400 that gives the numbers;
a generation that fills the window shifts and goes on (the default), or stops with shift false."""

from __future__ import annotations

import httpx
import ollama
import pytest

from tests.server.smol import serving_smol

pytestmark = pytest.mark.model

MODEL = "smol"


def tools(n: int) -> list[dict]:
    """`n` tool definitions the size of Open WebUI's built-in ones (about 150 tokens each)."""
    return [{"type": "function", "function": {
        "name": f"tool_{i}",
        "description": f"Tool number {i}: searches the user's notes, memories and files for a query, "
                       "ranks what it finds by relevance and returns the best matches with their titles.",
        "parameters": {"type": "object", "required": ["query"], "properties": {
            "query": {"type": "string", "description": "What to search for, in the user's words."},
            "limit": {"type": "integer", "description": "How many matches to return at most (default 5)."},
            "collection": {"type": "string", "enum": ["notes", "memories", "files", "chats"],
                           "description": "Where to search."}}}}} for i in range(n)]


def history(turns: int) -> list[dict]:
    out: list[dict] = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(turns):
        out.append({"role": "user", "content": f"Tell me fact number {i} about the ocean, in two sentences."})
        out.append({"role": "assistant", "content": f"Fact {i}: the ocean covers most of the planet and holds "
                                                    "almost all of its water, with many creatures in its depths."})
    out.append({"role": "user", "content": "What is the capital of France?"})
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_gguf):
    with serving_smol(tmp_path_factory.mktemp("overflow"), smollm2_gguf, "corral_overflow", keep_alive="-1") as live:
        yield live


def test_an_open_webui_shaped_chat_over_num_ctx_is_answered(server, caplog):
    client = ollama.Client(host=server.url, timeout=600)
    messages = history(40)  # 81 messages, and 36 tools: several times num_ctx
    reply = client.chat(model=MODEL, messages=messages, tools=tools(36), options={"temperature": 0, "num_predict": 8})
    assert reply.done and reply.done_reason in ("stop", "length")
    assert reply.message.content or reply.message.tool_calls
    assert 0 < reply.prompt_eval_count <= 2048 - 8
    # the tools alone are over the window: after the messages, the prompt's tokens were cut
    assert any(r.levelname == "WARNING" and r.getMessage().startswith("truncating the prompt from ")
               for r in caplog.records)


def test_a_long_history_loses_its_oldest_turns_and_is_answered(server):
    client = ollama.Client(host=server.url, timeout=600)
    reply = client.chat(model=MODEL, messages=history(60), options={"temperature": 0, "num_predict": 8})
    assert reply.done and reply.message.content
    assert reply.prompt_eval_count <= 2048 - 8


def test_truncate_false_is_a_400_that_says_by_how_much(server):
    body = {"model": MODEL, "messages": history(60), "truncate": False, "stream": False}
    response = httpx.post(server.url + "/api/chat", json=body, timeout=600)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith("the prompt is ") and "more than the context window of 2048 tokens (num_ctx)" in error
    n = int(error.split()[3])
    assert f"{n} tokens, {n - 2048} more than" in error


def test_a_generate_prompt_over_num_ctx_is_cut_and_answered(server):
    client = ollama.Client(host=server.url, timeout=600)
    reply = client.generate(model=MODEL, prompt="The sea is deep. " * 600, options={"temperature": 0, "num_predict": 8})
    assert reply.done and reply.prompt_eval_count <= 2048 - 8


COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,"


def test_shift_false_stops_when_the_context_is_full(server):
    body = {"model": MODEL, "prompt": COUNTING, "raw": True, "stream": False, "shift": False,
            "options": {"num_ctx": 256, "num_predict": 400, "temperature": 0}}
    reply = httpx.post(server.url + "/api/generate", json=body, timeout=600).json()
    assert reply["done_reason"] == "length"
    assert reply["eval_count"] < 256  # what fitted beside the prompt


def test_a_generation_past_num_ctx_shifts_and_goes_on(server):
    client = ollama.Client(host=server.url, timeout=600)
    reply = client.generate(model=MODEL, prompt=COUNTING, raw=True,
                            options={"num_ctx": 256, "num_predict": 400, "temperature": 0})
    assert (reply.done_reason, reply.eval_count) == ("length", 400)  # more than the 256-token window holds
    assert "101, 102, 103," in reply.response  # still counting after the first shift
