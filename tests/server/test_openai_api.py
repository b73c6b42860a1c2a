"""The OpenAI-compatible API over the real runtime with scripted engines, through the official
`openai` client and raw SSE. Expected texts and counts come from the engines' script."""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest

from tests.server.test_native_api import WEATHER, unit

MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def client(fake):
    with openai.OpenAI(base_url=fake.url + "/v1", api_key="anything", max_retries=0) as client:
        yield client


def events(response) -> list[str]:
    """The `data:` payloads of an SSE body, checking the framing on the way."""
    text = response.text
    assert text.endswith("data: [DONE]\n\n")
    blocks = text.split("\n\n")[:-1]
    assert all(b.startswith("data: ") for b in blocks)
    return [b[len("data: "):] for b in blocks]


def test_chat_completion(fake, client):
    done = client.chat.completions.create(model="smol", messages=MESSAGES)
    script = fake.engines
    assert done.object == "chat.completion" and done.id.startswith("chatcmpl-")
    assert done.choices[0].message.content == "".join(script.pieces) and done.choices[0].message.role == "assistant"
    assert done.choices[0].finish_reason == "stop"
    prompt, completion = script.prompt_eval_count, len(script.pieces)
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == \
        (prompt, completion, prompt + completion)
    sampling = fake.engines.requests[0].sampling
    assert (sampling.temperature, sampling.top_p) == (1.0, 1.0)  # Ollama's defaults for /v1


def test_sampling_fields_map_to_options(fake, client):
    client.chat.completions.create(model="smol", messages=MESSAGES, temperature=0, top_p=0.5, max_tokens=7,
                                   seed=42, stop="END", frequency_penalty=0.5, presence_penalty=0.25)
    r = fake.engines.requests[0]
    s = r.sampling
    assert (s.temperature, s.top_p, s.num_predict, s.seed, s.frequency_penalty, s.presence_penalty) == \
        (0.0, 0.5, 7, 42, 0.5, 0.25)
    assert r.stop == ("END",)


def test_chat_stream_chunks(fake, client):
    chunks = list(client.chat.completions.create(model="smol", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    n = len(fake.engines.pieces)
    assert [c.choices[0].delta.content for c in chunks[:n]] == fake.engines.pieces
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[1].choices[0].delta.role is None
    assert chunks[n].choices[0].finish_reason == "stop" and chunks[n].choices[0].delta.content is None
    assert chunks[n + 1].choices == [] and chunks[n + 1].usage.total_tokens == fake.engines.prompt_eval_count + n
    assert len(chunks) == n + 2
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1


def test_chat_stream_framing(fake):
    r = fake.client.post("/v1/chat/completions", json={"model": "smol", "messages": MESSAGES, "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    payloads = events(r)
    assert payloads[-1] == "[DONE]"
    finish = json.loads(payloads[-2])
    assert finish["object"] == "chat.completion.chunk" and finish["choices"][0] == {
        "index": 0, "delta": {}, "finish_reason": "stop"}
    assert "usage" not in finish


def test_tool_calls(fake, client):
    fake.engines.pieces = ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>']
    done = client.chat.completions.create(model="smol", messages=MESSAGES, tools=[WEATHER])
    call = done.choices[0].message.tool_calls[0]
    assert done.choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    chunks = list(client.chat.completions.create(model="smol", messages=MESSAGES, tools=[WEATHER], stream=True))
    assert chunks[0].choices[0].delta.tool_calls[0].function.name == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice(fake, client):
    client.chat.completions.create(model="smol", messages=MESSAGES, tools=[WEATHER], tool_choice="required")
    client.chat.completions.create(model="smol", messages=MESSAGES, tools=[WEATHER],
                                   tool_choice={"type": "function", "function": {"name": "get_weather"}})
    client.chat.completions.create(model="smol", messages=MESSAGES, tools=[WEATHER], tool_choice="none")
    forced, named, none = fake.engines.requests
    assert forced.grammar and "corral-text" not in forced.grammar and '"\\"get_weather\\""' in forced.grammar
    assert named.grammar == forced.grammar
    assert none.grammar is None and "get_weather" not in none.prompt
    with pytest.raises(openai.BadRequestError, match="no tool named 'other'"):
        client.chat.completions.create(model="smol", messages=MESSAGES, tools=[WEATHER],
                                       tool_choice={"type": "function", "function": {"name": "other"}})


def test_tool_history_from_openai_messages(fake, client):
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    client.chat.completions.create(model="smol", messages=messages, tools=[WEATHER])
    assert "Result of get_weather: sunny" in fake.engines.requests[0].prompt


def test_response_format(fake, client):
    client.chat.completions.create(model="smol", messages=MESSAGES, response_format={"type": "json_object"})
    client.chat.completions.create(model="smol", messages=MESSAGES, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}})
    client.chat.completions.create(model="smol", messages=MESSAGES, response_format={"type": "text"})
    json_mode, schema, text = (r.grammar for r in fake.engines.requests)
    assert json_mode.lstrip().startswith("root   ::= object")
    assert "integer" in schema and text is None


def test_content_parts_and_images(fake, client):
    client.chat.completions.create(model="smol", messages=[{"role": "user", "content": [
        {"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}])
    assert "<|im_start|>user\none\ntwo<|im_end|>" in fake.engines.requests[0].prompt
    with pytest.raises(openai.BadRequestError, match="image URLs are not currently supported"):
        client.chat.completions.create(model="smol", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    with pytest.raises(openai.BadRequestError, match="does not support images"):
        client.chat.completions.create(model="smol", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}]}])


def test_developer_role_is_a_system_message(fake, client):
    client.chat.completions.create(model="smol", messages=[{"role": "developer", "content": "Rules."}, *MESSAGES])
    assert fake.engines.requests[0].prompt.startswith("<|im_start|>system\nRules.<|im_end|>")


def test_completions(fake, client):
    done = client.completions.create(model="smol", prompt="Once", max_tokens=5)
    text = "".join(fake.engines.pieces)
    assert done.object == "text_completion" and done.choices[0].text == text
    assert done.choices[0].finish_reason == "stop" and done.usage.completion_tokens == len(fake.engines.pieces)
    chunks = list(client.completions.create(model="smol", prompt="Once", stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert chunks[-1].usage.prompt_tokens == fake.engines.prompt_eval_count


def test_embeddings(fake, client):
    result = client.embeddings.create(model="smol", input=["a", "b"])  # the client asks for base64
    vector = unit(fake.engines.vector)
    assert [d.embedding for d in result.data] == [pytest.approx(vector)] * 2
    assert result.usage.prompt_tokens == 2 * fake.engines.tokens_per_input
    assert all(r.normalize for r in fake.engines.embedded)
    floats = client.embeddings.create(model="smol", input="a", encoding_format="float")
    assert floats.data[0].embedding == vector
    raw = fake.client.post("/v1/embeddings", json={"model": "smol", "input": "a", "encoding_format": "base64"}).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert struct.unpack(f"<{len(vector)}f", packed) == pytest.approx(vector)
    cut = client.embeddings.create(model="smol", input="a", dimensions=2, encoding_format="float")
    assert cut.data[0].embedding == pytest.approx(unit(fake.engines.vector[:2]))  # cut, normalized again


def test_models(fake, client):
    listed = client.models.list()
    assert {m.id for m in listed.data} == {"smol:latest", "toolsmodel:latest"}
    assert all(m.owned_by == "library" and m.object == "model" for m in listed.data)
    assert client.models.retrieve("smol").id == "smol"
    with pytest.raises(openai.NotFoundError, match="model 'nope' not found"):
        client.models.retrieve("nope")


def test_errors_reach_the_client_typed(fake, client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smol", messages=[{"role": "bot", "content": "x"}])
    assert info.value.body["param"] == "messages.0.role"


def test_a_completion_is_not_tokenized_again_for_a_context(fake, client):
    """/v1/completions has no `context`: its answer ends without a round trip to the worker to
    tokenize prompt and reply (which /api/generate makes for its context)."""
    assert client.completions.create(model="smol", prompt="Hi").choices[0].text == "".join(fake.engines.pieces)
    list(client.completions.create(model="smol", prompt="Hi", stream=True))
    assert fake.engines.tokenized == []
    assert fake.client.post("/api/generate", json={"model": "smol", "prompt": "Hi", "stream": False}).json()["context"]
    assert len(fake.engines.tokenized) == 1
