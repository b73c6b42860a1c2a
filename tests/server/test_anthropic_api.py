"""The Anthropic Messages API (/v1/messages) over the real runtime with scripted engines, through the
official `anthropic` client and raw SSE. Expected texts and counts come from the engines' script."""

from __future__ import annotations

import json

import anthropic
import pytest

from tests.server.test_responses_api import CALL, named_events, thinker  # noqa: F401 (a fixture)

TOOL = {"name": "get_weather", "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def client(fake):
    with anthropic.Anthropic(base_url=fake.url, api_key="anything", max_retries=0) as client:
        yield client


def test_message(fake, client):
    done = client.messages.create(model="smol", max_tokens=9, messages=HI, system="Be brief.")
    script = fake.engines
    assert done.type == "message" and done.role == "assistant" and done.id.startswith("msg_")
    assert [(b.type, b.text) for b in done.content] == [("text", "".join(script.pieces))]
    assert done.stop_reason == "end_turn" and done.stop_sequence is None
    assert (done.usage.input_tokens, done.usage.output_tokens) == (script.prompt_eval_count, len(script.pieces))
    request = script.requests[0]
    assert request.prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" \
                             "<|im_start|>assistant\n"
    assert request.sampling.num_predict == 9


def test_sampling_fields(fake, client):
    fake.engines.done_reason = "length"
    # The client of today sends sampling fields only through extra_body; older clients and other
    # tools send them as Anthropic's API defines them, at the top level.
    done = client.messages.create(model="smol", max_tokens=5, messages=HI, stop_sequences=["END"],
                                  system=[{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
                                  extra_body={"temperature": 0.5, "top_p": 0.75, "top_k": 3})
    assert done.stop_reason == "max_tokens"
    request = fake.engines.requests[0]
    assert (request.sampling.temperature, request.sampling.top_p, request.sampling.top_k) == (0.5, 0.75, 3)
    assert request.stop == ("END",) and request.prompt.startswith("<|im_start|>system\nA\nB<|im_end|>")


def test_tool_use_and_tool_result_round_trip(fake, client):
    fake.engines.pieces = [CALL]
    first = client.messages.create(model="smol", max_tokens=50, messages=[
        {"role": "user", "content": "Weather in Paris?"}], tools=[TOOL])
    assert first.stop_reason == "tool_use"
    (use,) = first.content
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    assert use.id.startswith("toolu_")
    fake.engines.pieces = ["Sunny", "."]
    second = client.messages.create(model="smol", max_tokens=50, tools=[TOOL], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": [{"type": "text", "text": "sunny"}]}]}])
    assert second.content[0].text == "Sunny." and second.stop_reason == "end_turn"
    prompt = fake.engines.requests[1].prompt
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "Result of get_weather: sunny" in prompt


@pytest.mark.parametrize("choice, forced, hidden", [
    ({"type": "any"}, True, False), ({"type": "tool", "name": "get_weather"}, True, False),
    ({"type": "auto"}, False, False), ({"type": "none"}, False, True)])
def test_tool_choice(fake, client, choice, forced, hidden):
    client.messages.create(model="smol", max_tokens=5, messages=HI, tools=[TOOL], tool_choice=choice)
    request = fake.engines.requests[0]
    if hidden:
        assert request.grammar is None and "get_weather" not in request.prompt
    else:
        assert request.grammar and ("corral-text" not in request.grammar) == forced


def test_stream_event_sequence(fake, client):
    with client.messages.stream(model="smol", max_tokens=9, messages=HI) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert texts == fake.engines.pieces
    assert final.content[0].text == "".join(fake.engines.pieces) and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == \
        (fake.engines.prompt_eval_count, len(fake.engines.pieces))
    r = fake.client.post("/v1/messages", json={"model": "smol", "max_tokens": 9, "messages": HI, "stream": True})
    kinds = [kind for kind, _ in named_events(r)]
    assert kinds == ["message_start", "ping", "content_block_start", *["content_block_delta"] * len(texts),
                     "content_block_stop", "message_delta", "message_stop"]


def test_stream_tool_use(fake, client):
    fake.engines.pieces = ["Let me check.", CALL]
    r = fake.client.post("/v1/messages", json={"model": "smol", "max_tokens": 50, "messages": HI, "tools": [TOOL],
                                               "stream": True})
    events = named_events(r)
    assert [(kind, data.get("index")) for kind, data in events] == [
        ("message_start", None), ("ping", None), ("content_block_start", 0), ("content_block_delta", 0),
        ("content_block_stop", 0), ("content_block_start", 1), ("content_block_delta", 1), ("content_block_stop", 1),
        ("message_delta", None), ("message_stop", None)]
    assert events[5][1]["content_block"]["name"] == "get_weather"
    assert json.loads(events[6][1]["delta"]["partial_json"]) == {"city": "Paris"}
    assert events[8][1]["delta"]["stop_reason"] == "tool_use"
    with client.messages.stream(model="smol", max_tokens=50, messages=HI, tools=[TOOL]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"] and final.content[1].input == {"city": "Paris"}


def test_stream_error_after_start(fake):
    fake.engines.fail_after = RuntimeError("the worker died")
    r = fake.client.post("/v1/messages", json={"model": "smol", "max_tokens": 9, "messages": HI, "stream": True})
    kind, data = named_events(r)[-1]
    assert kind == "error" and data["error"]["type"] == "api_error"


def test_headers_are_accepted(fake):
    r = fake.client.post("/v1/messages", json={"model": "smol", "max_tokens": 9, "messages": HI},
                         headers={"x-api-key": "secret", "anthropic-version": "2023-06-01"})
    assert r.status_code == 200 and r.json()["type"] == "message"


def test_browser_preflight_allows_anthropic_headers(fake):
    r = fake.client.options("/v1/messages", headers={"Origin": "http://localhost:5173",
                                                     "Access-Control-Request-Method": "POST"})
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert r.status_code == 204 and {"x-api-key", "anthropic-version",
                                     "anthropic-dangerous-direct-browser-access"} <= allowed


@pytest.mark.parametrize("path, body, status, kind, says", [
    ("/v1/messages", {"model": "nope", "max_tokens": 9, "messages": HI}, 404, "not_found_error", "nope"),
    ("/v1/messages", {"model": "smol", "messages": HI}, 400, "invalid_request_error", "max_tokens"),
    ("/v1/messages", {"model": "smol", "max_tokens": 9, "messages": []}, 400, "invalid_request_error", "messages"),
    ("/v1/messages", {"model": "smol", "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]},
     400, "invalid_request_error", '"smol:latest" does not support images'),
    ("/v1/messages", {"model": "smol", "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {}}]}]}, 400, "invalid_request_error", "messages.0.content.0.type"),
    ("/v1/messages/other", {}, 404, "not_found_error", "404"),
])
def test_errors_are_anthropic_shaped(fake, path, body, status, kind, says):
    r = fake.client.post(path, json=body)
    assert r.status_code == status
    answer = r.json()
    assert answer["type"] == "error" and set(answer["error"]) == {"type", "message"}
    assert answer["error"]["type"] == kind and says in answer["error"]["message"]


def test_client_sees_typed_errors(client):
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=9, messages=HI)
    with pytest.raises(anthropic.BadRequestError, match="temperature"):
        client.messages.create(model="smol", max_tokens=9, messages=HI, extra_body={"temperature": 3})


def test_structured_output(fake, client):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    client.messages.create(model="smol", max_tokens=9, messages=HI,
                           output_config={"format": {"type": "json_schema", "schema": schema}})
    assert fake.engines.requests[0].grammar


def test_thinking_blocks(fake, client, thinker):  # noqa: F811
    done = client.messages.create(model=thinker, max_tokens=20, messages=HI)
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in done.content] == [
        ("thinking", "Let me see."), ("text", "Hi!")]
    with client.messages.stream(model=thinker, max_tokens=20, messages=HI) as stream:
        kinds = [(e.type, getattr(e, "index", None)) for e in stream]
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"] and final.content[0].thinking == "Let me see."
    assert ("content_block_stop", 0) in kinds and kinds.index(("content_block_stop", 0)) < kinds.index(
        ("content_block_start", 1))


# -- the real server with SmolLM2 --------------------------------------------------------------

from tests.server.test_end_to_end import server, store_root  # noqa: E402,F401 (the shared real server)

REAL_TOOL = {"name": "get_weather", "description": "Get the current weather in a city",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                              "required": ["city"]}}
QUESTION = [{"role": "user", "content": "What is 2+2?"}]
GREEDY = {"temperature": 0}


@pytest.fixture
def real(server):  # noqa: F811
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=300) as client:
        yield client


@pytest.mark.model
def test_real_model_answers_streams_and_counts(real):
    done = real.messages.create(model="smol", max_tokens=12, system="Answer briefly.", messages=QUESTION,
                                extra_body=GREEDY)
    assert done.stop_reason in ("end_turn", "max_tokens") and done.content[0].text.strip()
    assert 0 < done.usage.output_tokens <= 12
    with real.messages.stream(model="smol", max_tokens=12, system="Answer briefly.", messages=QUESTION,
                              extra_body=GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == done.content[0].text  # greedy decoding is repeatable
    counted = real.messages.count_tokens(model="smol", system="Answer briefly.", messages=QUESTION)
    assert counted.input_tokens == final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) > 5


@pytest.mark.model
def test_real_model_tool_use_round_trip(real):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = real.messages.create(model="smol", max_tokens=60, messages=[question], tools=[REAL_TOOL],
                                 tool_choice={"type": "any"}, extra_body=GREEDY)
    assert first.stop_reason == "tool_use"
    (use,) = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "get_weather" and set(use.input) == {"city"}
    with real.messages.stream(model="smol", max_tokens=30, tools=[REAL_TOOL], extra_body=GREEDY, messages=[
            question, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}]}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason in ("end_turn", "max_tokens", "tool_use") and final.content
