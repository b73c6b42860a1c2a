"""The real server with the real runtime and SmolLM2-135M-Instruct, through the official clients.

One session-scoped server (4 slots) serves most tests; a second one with a single slot and no
queue checks the busy answer, disconnects and keep_alive 0. The model is created in a temporary
store. Answers of a 135M model are not checked for sense, only for shape, counts and constraints.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import time
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from corral.server.app import create_app
from corral.config.settings import Settings
from tests.server.live import LiveServer
from tests.server.smol import smol_store

pytestmark = pytest.mark.model

MODEL = "smol"
GREEDY = {"temperature": 0, "num_predict": 12}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"]}}}


@pytest.fixture(scope="session")
def store_root(tmp_path_factory, smollm2_gguf) -> Path:
    return smol_store(tmp_path_factory.mktemp("e2e"), smollm2_gguf)


@pytest.fixture(scope="session")
def server(store_root):
    app = create_app(Settings(models=store_root, num_parallel=4, keep_alive="-1"), name="corral_e2e")
    with LiveServer(app) as live:
        yield live


@pytest.fixture
def native(server):
    return ollama.Client(host=server.url, timeout=300)


@pytest.fixture
def oai(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300) as client:
        yield client


def test_chat_and_generate(native):
    reply = native.chat(model=MODEL, messages=[{"role": "user", "content": "What is 2+2?"}], options=GREEDY)
    assert reply.message.role == "assistant" and reply.message.content.strip()
    assert reply.done and reply.done_reason in ("stop", "length")
    assert reply.eval_count and reply.eval_count <= 12 and reply.prompt_eval_count > 5
    assert reply.total_duration >= reply.eval_duration > 0
    again = native.chat(model=MODEL, messages=[{"role": "user", "content": "What is 2+2?"}], options=GREEDY)
    assert again.message.content == reply.message.content  # greedy decoding is repeatable
    generated = native.generate(model=MODEL, prompt="Name a color.", options=GREEDY)
    assert generated.response.strip() and generated.done


def test_native_streaming(native):
    chunks = list(native.chat(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                              options=GREEDY, stream=True))
    assert len(chunks) >= 3 and all(not c.done for c in chunks[:-1]) and chunks[-1].done
    text = "".join(c.message.content for c in chunks)
    assert text.strip() and chunks[-1].eval_count >= len([c for c in chunks[:-1] if c.message.content]) // 2
    parts = list(native.generate(model=MODEL, prompt="Say hello.", options=GREEDY, stream=True))
    assert parts[-1].done and "".join(p.response for p in parts).strip()


def test_openai_chat_streaming_and_usage(oai):
    chunks = list(oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                              temperature=0, max_tokens=10, stream=True,
                                              stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and 0 < chunks[-1].usage.completion_tokens <= 10
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                        temperature=0, max_tokens=10)
    assert whole.choices[0].message.content == text


def test_openai_completions(oai):
    done = oai.completions.create(model=MODEL, prompt="The sky is", max_tokens=5, temperature=0)
    assert done.choices[0].text and done.usage.completion_tokens <= 5


def test_embeddings(native, oai):
    result = native.embed(model=MODEL, input=["hello world", "goodbye"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 576
    assert math.isclose(math.sqrt(sum(x * x for x in result.embeddings[0])), 1.0, rel_tol=1e-3)
    assert result.embeddings[0] != result.embeddings[1]
    vectors = oai.embeddings.create(model=MODEL, input="hello world", encoding_format="float")
    assert vectors.data[0].embedding == pytest.approx(result.embeddings[0], abs=1e-4)
    cut = native.embed(model=MODEL, input="hello", dimensions=8)
    assert len(cut.embeddings[0]) == 8


def test_json_schema_output_fits_the_schema(native, oai):
    schema = {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20}, "population": {"type": "integer"},
        "capital": {"type": "boolean"}, "continent": {"enum": ["Europe", "Asia", "Other"]}},
        "required": ["city", "population", "capital", "continent"]}
    reply = native.chat(model=MODEL, messages=[{"role": "user", "content": "Describe Paris as JSON."}],
                        format=schema, options={"temperature": 0, "num_predict": 120})
    data = json.loads(reply.message.content)
    assert set(data) == {"city", "population", "capital", "continent"}
    assert isinstance(data["city"], str) and len(data["city"]) <= 20
    assert isinstance(data["population"], int) and isinstance(data["capital"], bool)
    assert data["continent"] in ("Europe", "Asia", "Other")
    done = oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe Paris as JSON."}], temperature=0,
        max_tokens=120, response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    assert set(json.loads(done.choices[0].message.content)) == set(schema["properties"])
    any_json = native.generate(model=MODEL, prompt="A JSON object about cats:", format="json",
                               options={"temperature": 0, "num_predict": 60})
    if any_json.done_reason == "stop":
        assert isinstance(json.loads(any_json.response), dict)


def test_tool_calls(native, oai):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = oai.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], tool_choice="required",
                                         temperature=0, max_tokens=60)
    assert forced.choices[0].finish_reason == "tool_calls"
    call = forced.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert set(json.loads(call.function.arguments)) == {"city"}
    auto = native.chat(model=MODEL, messages=messages, tools=[WEATHER], options={"temperature": 0, "num_predict": 60})
    for call in auto.message.tool_calls or []:  # a 135M model may answer in words; a call must be well-formed
        assert call.function.name == "get_weather" and isinstance(call.function.arguments.get("city"), str)
    assert auto.message.tool_calls or auto.message.content.strip()


def test_eight_concurrent_requests_each_get_their_own_answer(server):
    """Counting prompts have one right continuation each, so crossed streams would show."""
    def ask(i: int) -> dict:
        start = 10 * (i + 1)
        prompt = ", ".join(str(start + k) for k in range(5)) + ","
        body = {"model": MODEL, "prompt": prompt, "raw": True, "stream": False,
                "options": {"temperature": 0, "num_predict": 8}}
        return httpx.post(server.url + "/api/generate", json=body, timeout=600).json()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    for i, answer in enumerate(answers):
        start = 10 * (i + 1)
        assert answer["done"] is True and answer["done_reason"] == "length" and answer["eval_count"] == 8
        assert answer["response"].startswith(f" {start + 5}, {start + 6},"), answer["response"]


def test_unknown_model_is_404(native, oai):
    with pytest.raises(ollama.ResponseError) as info:
        native.chat(model="missing", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404 and info.value.error == "model 'missing' not found"
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="missing", messages=[{"role": "user", "content": "hi"}])


def test_malformed_bodies_are_400_naming_the_field(server):
    r = httpx.post(server.url + "/api/chat", json={"model": MODEL, "messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 400
    assert r.json() == {"error": "messages.0.role: Input should be 'system', 'user', 'assistant' or 'tool'"}
    r = httpx.post(server.url + "/v1/chat/completions", content=b'{"model": "smol", "messages": [')
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_tags_show_ps(native):
    assert [m.model for m in native.list().models] == ["smol:latest"]
    shown = native.show(MODEL)
    assert shown.details.family == "llama" and "completion" in shown.capabilities
    native.generate(model=MODEL, prompt="Hi", options={"num_predict": 1})
    running = native.ps().models
    assert [m.model for m in running] == ["smol:latest"] and running[0].size > 0


def test_create_through_the_api(native, smollm2_gguf):
    digest = native.create_blob(smollm2_gguf)
    statuses = [p.status for p in native.create(model="smol-copy", files={"smol.gguf": digest},
                                                system="Answer briefly.", stream=True)]
    assert statuses[-1] == "success"
    assert "SYSTEM Answer briefly." in native.show("smol-copy").modelfile
    native.delete("smol-copy")


@pytest.fixture
def one_slot(store_root):
    """A server with one slot and no queue: the second request at once is turned away."""
    app = create_app(Settings(models=store_root, num_parallel=1, max_queue=0), name="corral_one_slot")
    with LiveServer(app) as live:
        yield live


def _in_flight(live: LiveServer) -> int:
    return sum(m.in_flight for m in live.app.ctx.scheduler.running())


def test_busy_disconnect_and_keep_alive_zero(one_slot):
    url = one_slot.url
    # The grammar rules out an early end of text, so this answer outlasts the test's checks.
    long = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}],
            "format": {"type": "string", "minLength": 4000}, "options": {"num_predict": 4000}}
    with httpx.Client(timeout=300) as client:
        with client.stream("POST", url + "/api/chat", json=long) as stream:
            lines = stream.iter_lines()  # kept: dropping it would close the response, a disconnect
            first = json.loads(next(lines))
            assert first["done"] is False
            busy = httpx.post(url + "/api/chat", json={**long, "stream": False}, timeout=60)
            assert busy.status_code == 503 and busy.headers["retry-after"].isdigit()
            assert busy.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}
            assert _in_flight(one_slot) == 1
        # The client went away mid-stream: its slot is free right after.
        deadline = time.monotonic() + 30
        while _in_flight(one_slot) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _in_flight(one_slot) == 0
        ok = client.post(url + "/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False,
                                                      "options": {"num_predict": 2}})
        assert ok.status_code == 200 and ok.json()["eval_count"] == 2
        assert [m["name"] for m in client.get(url + "/api/ps").json()["models"]] == ["smol:latest"]
        unload = client.post(url + "/api/generate", json={"model": MODEL, "keep_alive": 0}).json()
        assert unload["done_reason"] == "unload"
        assert client.get(url + "/api/ps").json() == {"models": []}
        once = client.post(url + "/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False,
                                                        "keep_alive": 0, "options": {"num_predict": 2}})
        assert once.status_code == 200 and client.get(url + "/api/ps").json() == {"models": []}
