"""format / response_format / tools as GBNF: what is written, and that llama.cpp accepts it."""

from __future__ import annotations

import ctypes

import pytest

from corral.runtime.errors import InvalidRequestError
from corral.server.errors import status_of
from corral.runtime.structured import (format_grammar, json_grammar, response_format_to_format, schema_grammar,
                                       tool_call_grammar, tool_call_schema)

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer"}}, "required": ["name", "age"]}
TOOLS = [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                "required": ["city"]}},
         {"name": "now", "parameters": {"type": "object", "properties": {}}}]


def test_format_values():
    assert format_grammar(None) is None
    assert format_grammar("json") == json_grammar()
    assert "root ::=" in format_grammar(PERSON)
    with pytest.raises(InvalidRequestError, match='invalid format: "xml"'):
        format_grammar("xml")


def test_schema_strings_exclude_control_characters():
    grammar = schema_grammar(PERSON)
    assert 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |' in grammar
    assert 'char ::= [^"\\\\] |' not in grammar


@pytest.mark.parametrize("schema, message", [
    ({"type": "strange"}, "format: cannot turn this JSON schema into a grammar: Unrecognized schema"),
    ({"$ref": "#/definitions/missing"}, "format: cannot turn this JSON schema into a grammar: Error resolving ref"),
    ({"$ref": "https://example.com/schema.json"}, "Fetching remote schemas is not allowed"),
])
def test_unusable_schemas_are_400(schema, message):
    with pytest.raises(InvalidRequestError) as info:
        schema_grammar(schema)
    assert message in info.value.message and info.value.param == "format" and status_of(info.value) == 400


@pytest.mark.parametrize("response_format, expected", [
    (None, None),
    ({"type": "text"}, None),
    ({"type": "json_object"}, "json"),
    ({"type": "json_object", "schema": PERSON}, PERSON),
    ({"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON, "strict": True}}, PERSON),
])
def test_response_format(response_format, expected):
    assert response_format_to_format(response_format) == expected


def test_json_schema_response_format_needs_a_schema():
    with pytest.raises(InvalidRequestError, match="response_format.json_schema.schema"):
        response_format_to_format({"type": "json_schema", "json_schema": {"name": "x"}})


def test_tool_call_schema_pins_names_and_arguments():
    schema = tool_call_schema(TOOLS)
    first = schema["anyOf"][0]
    assert first["properties"]["name"] == {"const": "get_weather"}
    assert first["properties"]["arguments"]["additionalProperties"] is False
    assert first["required"] == ["name", "arguments"]
    assert "anyOf" not in tool_call_schema(TOOLS[:1])


def test_tool_call_grammar_shapes():
    forced = tool_call_grammar(TOOLS, allow_text=False)
    assert forced.startswith("alternative-0 ::=") and "root ::= alternative-0 | alternative-1" in forced
    assert '"\\"name\\"" space ":" space alternative-0-name' in forced
    either = tool_call_grammar(TOOLS, allow_text=True)
    assert either.startswith("root ::= corral-call | corral-text\ncorral-text ::= [^{ \\t\\n] .*\n")
    assert "corral-call ::= alternative-0 | alternative-1" in either and "\nroot ::= alternative" not in either


@pytest.fixture(scope="module")
def vocab(smollm2_gguf):
    llama_cpp = pytest.importorskip("llama_cpp")
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(smollm2_gguf).encode(), params)
    assert model
    yield llama_cpp, llama_cpp.llama_model_get_vocab(model)
    llama_cpp.llama_model_free(model)


def accepts(vocab, grammar: str, text: str) -> bool:
    """Whether llama.cpp parses `grammar` and lets the tokens of `text` through."""
    llama_cpp, v = vocab
    sampler = llama_cpp.llama_sampler_init_grammar(v, grammar.encode(), b"root")
    assert sampler, "llama.cpp rejected the grammar"
    try:
        data = text.encode()
        tokens = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(v, data, len(data), tokens, len(tokens), False, True)
        n_vocab = llama_cpp.llama_vocab_n_tokens(v)
        for i in range(n):
            array = (llama_cpp.llama_token_data * n_vocab)()
            for t in range(n_vocab):
                array[t].id, array[t].logit, array[t].p = t, 0.0, 0.0
            candidates = llama_cpp.llama_token_data_array(array, n_vocab, -1, False)
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
            if array[tokens[i]].logit == float("-inf"):
                return False
            llama_cpp.llama_sampler_accept(sampler, tokens[i])
        return True
    finally:
        llama_cpp.llama_sampler_free(sampler)


@pytest.mark.model
def test_llama_cpp_accepts_every_grammar_kind(vocab):
    assert accepts(vocab, json_grammar(), '{"a": [1, true, null]}')
    assert accepts(vocab, schema_grammar(PERSON), '{ "name": "Ann", "age": 3 }')
    assert not accepts(vocab, schema_grammar(PERSON), '{ "age": 3')
    forced = tool_call_grammar(TOOLS, allow_text=False)
    assert accepts(vocab, forced, '{"name": "get_weather", "arguments": {"city": "Paris"}}')
    assert not accepts(vocab, forced, '{"name": "get_time"')
    assert not accepts(vocab, forced, "Hello")
    either = tool_call_grammar(TOOLS, allow_text=True)
    assert accepts(vocab, either, "Hello, it is sunny.\nBye {}")
    assert accepts(vocab, either, '{"name": "now", "arguments": {}}')
    assert not accepts(vocab, either, '{"name": "nope"')
