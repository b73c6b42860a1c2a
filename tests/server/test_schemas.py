"""Request bodies: what each API accepts, and 400 messages that name the field at fault."""

from __future__ import annotations

import json

import pytest

from corral.server.errors import BadRequestError
from corral.server.openai_schemas import ChatCompletionBody, CompletionBody, EmbeddingBody
from corral.server.schemas import (ChatBody, CopyBody, CreateBody, DeleteBody, EmbedBody, EmbeddingsBody,
                                   GenerateBody, ShowBody, parse_body)


def error(model, body) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(BadRequestError) as info:
        parse_body(raw, model)
    return info.value.message


BAD = [
    (ChatBody, b"", "missing request body"),
    (ChatBody, b"  \n", "missing request body"),
    (ChatBody, b"[1]", "the request body must be a JSON object, got an array"),
    (ChatBody, {"messages": []}, "model: Field required"),
    (ChatBody, {"model": ""}, "model is required"),
    (ChatBody, {"model": 3}, "model: Input should be a valid string"),
    (ChatBody, {"model": "m", "messages": [{"role": "bot", "content": "x"}]},
     "messages.0.role: Input should be 'system', 'user', 'assistant' or 'tool'"),
    (ChatBody, {"model": "m", "messages": [{"content": "x"}]}, "messages.0.role: Field required"),
    (ChatBody, {"model": "m", "messages": "hi"}, "messages: Input should be a valid list"),
    (ChatBody, {"model": "m", "stream": "often"}, "stream: Input should be a valid boolean"),
    (ChatBody, {"model": "m", "keep_alive": "300"}, 'keep_alive: time: missing unit in duration "300"'),
    (ChatBody, {"model": "m", "keep_alive": True}, "keep_alive: Unsupported type: 'bool'"),
    (ChatBody, {"model": "m", "format": "xml"},
     'format: invalid format: "xml"; expected "json" or a valid JSON Schema object'),
    (ChatBody, {"model": "m", "format": 5}, 'format: invalid format: 5; expected "json" or a valid JSON Schema object'),
    (ChatBody, {"model": "m", "think": "huge"},
     'think: invalid think value: "huge" (must be "high", "medium", "low", "max", true, or false)'),
    (ChatBody, {"model": "m", "options": {"temperature": "hot"}},
     "options.temperature: expected a number, got the string 'hot'"),
    (ChatBody, {"model": "m", "options": {"top_p": 2}}, "options.top_p: top_p must be between 0 and 1, got 2"),
    (ChatBody, {"model": "m", "options": []}, "options: Input should be a valid dictionary"),
    (ChatBody, {"model": "m", "top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
    (ChatBody, {"model": "m", "tools": [{"type": "function", "function": {"description": "no name"}}]},
     "tools.0.function.name: Field required"),
    (ChatBody, {"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": "{not json"}}]}]},
     "messages.0.tool_calls.0.function.arguments: invalid tool call arguments"),
    (GenerateBody, {"model": "m", "raw": True, "system": "s"}, "raw mode does not support template, system, or context"),
    (GenerateBody, {"model": "m", "prompt": 5}, "prompt: Input should be a valid string"),
    (EmbedBody, {"model": "m", "input": 5}, "input: invalid input type"),
    (EmbedBody, {"model": "m", "input": ["a", 1]}, "input: invalid input type"),
    (EmbedBody, {"model": "m", "dimensions": 0}, "dimensions: Input should be greater than or equal to 1"),
    (EmbeddingsBody, {"prompt": "x"}, "model: Field required"),
    (ShowBody, {}, "model: Field required"),
    (CopyBody, {"source": "a"}, "destination: Field required"),
    (DeleteBody, {"model": ""}, "model is required"),
    (CreateBody, {"model": "m", "files": {"a.gguf": 5}}, "files.a.gguf: Input should be a valid string"),
    (CreateBody, {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
     "messages.0.role: Input should be 'system', 'user' or 'assistant'"),
    (ChatCompletionBody, {"model": "m", "messages": []}, "messages: [] is too short - 'messages'"),
    (ChatCompletionBody, {"model": "m"}, "messages: Field required"),
    (ChatCompletionBody, {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
     "messages.0.role: Input should be 'system', 'developer', 'user', 'assistant' or 'tool'"),
    (ChatCompletionBody, {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
     "temperature: Input should be less than or equal to 2"),
    (ChatCompletionBody, {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]},
     "stop: invalid type for 'stop' field: int"),
    (ChatCompletionBody, {"model": "m", "messages": [{"role": "user", "content": "x"}],
                          "response_format": {"type": "yaml"}},
     "response_format.type: Input should be 'text', 'json_object' or 'json_schema'"),
    (ChatCompletionBody, {"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "always"},
     'tool_choice must be "none", "auto", "required" or {"type": "function", "function": '
     '{"name": ...}}, got "always"'),
    (CompletionBody, {"model": "m", "prompt": ["a", "b"]}, "prompt: Input should be a valid string"),
    (EmbeddingBody, {"model": "m", "input": []}, "input: invalid input"),
    (EmbeddingBody, {"model": "m", "input": "x", "encoding_format": "int8"},
     "encoding_format: Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64']."),
]


@pytest.mark.parametrize("model, body, message", BAD, ids=[m for _, _, m in BAD])
def test_bad_bodies_name_the_field(model, body, message):
    assert error(model, body) == message


def test_invalid_json_is_reported():
    assert error(ChatBody, b'{"model": ').startswith("invalid JSON in the request body: Expecting value")


def test_the_first_bad_field_is_the_openai_param():
    with pytest.raises(BadRequestError) as info:
        parse_body(b'{"model": "m", "messages": [{"role": "bot"}]}', ChatBody)
    assert info.value.param == "messages.0.role"


def test_native_defaults_and_decoding():
    body = parse_body(json.dumps({"model": "m", "messages": [{"role": "USER", "content": None}],
                                  "keep_alive": "-1m", "options": {"temperature": 1, "num_predict": 5.0,
                                                                   "stop": "x", "unknown": 1}}).encode(), ChatBody)
    assert body.stream is True and body.format is None and body.think is None
    assert body.messages[0].role == "user" and body.messages[0].content == ""
    assert body.keep_alive == -1.0
    assert body.options == {"temperature": 1.0, "num_predict": 5, "stop": ("x",)}


def test_tool_call_arguments_may_be_a_json_string():
    body = parse_body(json.dumps({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": '{"a": 1}'}}]}]}).encode(), ChatBody)
    assert body.messages[0].tool_calls[0].function.arguments == {"a": 1}


def test_deprecated_aliases():
    assert parse_body(b'{"name": "m"}', ShowBody).model == "m"
    assert parse_body(b'{"name": "m"}', DeleteBody).model == "m"
    create = parse_body(b'{"name": "m", "from": "base", "quantization": "q8_0", "license": "MIT"}', CreateBody)
    assert (create.model, create.from_, create.quantize, create.license) == ("m", "base", "q8_0", ["MIT"])


def test_embed_input_forms():
    assert parse_body(b'{"model": "m", "input": "a"}', EmbedBody).input == ["a"]
    assert parse_body(b'{"model": "m", "input": ""}', EmbedBody).input == []
    assert parse_body(b'{"model": "m"}', EmbedBody).input == []
    assert parse_body(b'{"model": "m", "input": "a"}', EmbeddingBody).input == ["a"]
    assert parse_body(b'{"model": "m", "input": "a", "encoding_format": "BASE64"}', EmbeddingBody).encoding_format == "base64"


def test_openai_defaults():
    body = parse_body(b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": "END"}',
                      ChatCompletionBody)
    assert body.stream is False and body.stop == ["END"] and body.include_usage is False
    assert body.temperature is None and body.top_p is None
