"""Malformed JSON, deep nesting, wrong types and absurd options on every POST route: a 400 naming
the problem, never a 500 (server/schemas.py, server/limits.py)."""

from __future__ import annotations

import pytest

from corral.server.limits import MAX_JSON_DEPTH
from tests.security.conftest import assert_refused

ROUTES = [("POST", "/api/generate"), ("POST", "/api/chat"), ("POST", "/api/embed"), ("POST", "/api/embeddings"),
          ("POST", "/api/show"), ("POST", "/api/create"), ("POST", "/api/copy"), ("DELETE", "/api/delete"),
          ("POST", "/api/pull"), ("POST", "/api/push"), ("POST", "/api/library/apply"),
          ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
          ("POST", "/v1/responses"), ("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens")]
ROUTE_IDS = [path for _, path in ROUTES]

DEEP = "the request body nests arrays and objects deeper than 64 levels"
MALFORMED = [
    (b"", "missing request body"),
    (b"   ", "missing request body"),
    (b"{", "invalid JSON in the request body: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    (b"[]", "the request body must be a JSON object, got an array"),
    (b'"x"', "the request body must be a JSON object, got a string"),
    (b"1", "the request body must be a JSON object, got a number"),
    (b"null", "the request body must be a JSON object, got null"),
    (b"true", "the request body must be a JSON object, got a boolean"),
    (b'{"model": NaN}', "invalid JSON in the request body: NaN is not a JSON number"),
    (b'{"model": -Infinity}', "invalid JSON in the request body: -Infinity is not a JSON number"),
    (b'{"model": 1e999}', "invalid JSON in the request body: the number 1e999 is too large"),
    (b'{"model": ' + b"9" * 5000 + b"}", None),  # Python's own limit on integer digits: its wording
    (b'{"model": "\xff\xfe"}', None),  # not UTF-8
    (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, DEEP),  # past the parser's recursion limit
    (b"[" * 100_000, DEEP),
    (b'{"a": ' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1), DEEP),  # parsed, then refused
    (b'{"model": "m", "x": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}", DEEP),
]
MALFORMED_IDS = ["empty", "blank", "open-brace", "array", "string", "number", "null", "bool", "nan", "-infinity",
                 "1e999", "5000-digits", "not-utf8", "deep-100000", "brackets-100000", "deep-65", "deep-field"]


def _message(body: dict, path: str) -> str:
    error = body["error"]
    return error if isinstance(error, str) else error["message"]


@pytest.mark.parametrize("raw, message", MALFORMED, ids=MALFORMED_IDS)
@pytest.mark.parametrize("method, path", ROUTES, ids=ROUTE_IDS)
def test_malformed_bodies_are_400(fake, method, path, raw, message):
    r = fake.client.request(method, path, content=raw, headers={"Content-Type": "application/json"})
    body = assert_refused(fake, r, 400)
    if message is not None:
        assert _message(body, path) == message
    else:
        assert _message(body, path).startswith("invalid JSON in the request body: ")


WRONG_TYPES = [
    ("/api/chat", {"model": 1}, "model: Input should be a valid string"),
    ("/api/chat", {"model": "smol", "messages": "x"}, "messages: Input should be a valid list"),
    ("/api/chat", {"model": "smol", "options": []}, "options: Input should be a valid dictionary"),
    ("/api/chat", {"model": "smol", "stream": "false"}, "stream: Input should be a valid boolean"),
    ("/api/chat", {"model": "smol", "stream": 0}, "stream: Input should be a valid boolean"),
    ("/api/chat", {"model": "smol", "messages": [{"role": "user", "content": 5}]},
     "messages.0.content: Input should be a valid string"),
    ("/api/chat", {"model": "smol", "messages": [{"role": 1}]},
     "messages.0.role: Input should be 'system', 'user', 'assistant' or 'tool'"),
    ("/api/chat", {"model": "smol", "tools": {}}, "tools: Input should be a valid list"),
    ("/api/generate", {"model": "smol", "raw": "yes"}, "raw: Input should be a valid boolean"),
    ("/api/generate", {"model": "smol", "context": ["1"]}, "context.0: Input should be a valid integer"),
    ("/api/generate", {"model": "smol", "context": [-1]}, "context.0: Input should be greater than or equal to 0"),
    ("/api/generate", {"model": "smol", "top_logprobs": "3"}, "top_logprobs: Input should be a valid integer"),
    ("/api/generate", {"model": "smol", "options": {"temperature": "0.5"}},
     "options.temperature: expected a number, got the string '0.5'"),
    ("/api/generate", {"model": "smol", "options": {"num_ctx": "4096"}},
     "options.num_ctx: expected an integer, got the string '4096'"),
    ("/api/generate", {"model": "smol", "options": {"use_mmap": "true"}},
     "options.use_mmap: expected true or false, got the string 'true'"),
    ("/api/embed", {"model": "smol", "truncate": "no"}, "truncate: Input should be a valid boolean"),
    ("/api/embed", {"model": "smol", "dimensions": 1.5}, "dimensions: Input should be a valid integer"),
    ("/api/show", {"model": "smol", "verbose": 1}, "verbose: Input should be a valid boolean"),
    ("/api/pull", {"model": "smol", "insecure": "true"}, "insecure: Input should be a valid boolean"),
    ("/api/copy", {"source": "smol", "destination": 2}, "destination: Input should be a valid string"),
    ("/api/create", {"model": "x", "files": []}, "files: Input should be a valid dictionary"),
    ("/v1/chat/completions", {"model": "smol", "messages": "x"}, "messages: Input should be a valid list"),
    ("/v1/chat/completions", {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "stream": "true"},
     "stream: Input should be a valid boolean"),
    ("/v1/chat/completions", {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"},
     "max_tokens: Input should be a valid integer"),
    ("/v1/chat/completions", {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "temperature": "1"},
     "temperature: Input should be a valid number"),
    ("/v1/completions", {"model": "smol", "prompt": "hi", "echo": "false"}, "echo: Input should be a valid boolean"),
    ("/v1/embeddings", {"model": "smol", "input": "hi", "dimensions": "3"}, "dimensions: Input should be a valid integer"),
]


@pytest.mark.parametrize("path, body, message", WRONG_TYPES, ids=[m for _, _, m in WRONG_TYPES])
def test_wrong_types_are_400_naming_the_field(fake, path, body, message):
    method = "DELETE" if path == "/api/delete" else "POST"
    r = fake.client.request(method, path, json=body)
    assert _message(assert_refused(fake, r, 400), path) == message
    assert fake.engines.requests == []


CHAT = {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "stream": False}
ABSURD_OPTIONS = [
    ("num_ctx", 2**40, "options.num_ctx: num_ctx must be between 1 and 16777216, got 1099511627776"),
    ("num_ctx", 0, "options.num_ctx: num_ctx must be between 1 and 16777216, got 0"),
    ("num_ctx", 2**64, "options.num_ctx: num_ctx does not fit in 64 bits, got 18446744073709551616"),
    ("num_predict", 2**31, "options.num_predict: num_predict must be between -2 and 16777216, got 2147483648"),
    ("num_predict", -3, "options.num_predict: num_predict must be at least -2, got -3"),
    ("num_batch", 2**20, "options.num_batch: num_batch must be between 1 and 65536, got 1048576"),
    ("num_thread", 100_000, "options.num_thread: num_thread must be between 0 and 1024, got 100000"),
    ("num_thread", -1, "options.num_thread: num_thread must be between 0 and 1024, got -1"),
    ("num_gpu", -2, "options.num_gpu: num_gpu must be between -1 and 10000, got -2"),
    ("num_keep", 2**62, "options.num_keep: num_keep must be between -1 and 16777216, got 4611686018427387904"),
    ("top_k", 2**40, "options.top_k: top_k must be between 0 and 1000000, got 1099511627776"),
    ("top_k", -1, "options.top_k: top_k must be at least 0, got -1"),
    ("seed", 2**33, "options.seed: seed must be between -1 and 4294967295, got 8589934592"),
    ("seed", -2, "options.seed: seed must be at least -1, got -2"),
    ("repeat_last_n", 2**30, "options.repeat_last_n: repeat_last_n must be between -1 and 16777216, got 1073741824"),
    ("temperature", 1e6, "options.temperature: temperature must be between 0 and 100, got 1000000"),
    ("stop", ["x"] * 65, "options.stop: at most 64 stop sequences, got 65"),
    ("stop", ["x" * 5000], "options.stop: a stop sequence may be 4096 characters at most, got 5000"),
    ("stop", [""], "options.stop: a stop sequence cannot be empty"),
]


@pytest.mark.parametrize("name, value, message", ABSURD_OPTIONS, ids=[f"{n}={str(v)[:12]}" for n, v, _ in ABSURD_OPTIONS])
@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_absurd_options_are_400_before_the_engine(fake, path, name, value, message):
    body = {**CHAT, "options": {name: value}} if path == "/api/chat" else \
        {"model": "smol", "prompt": "hi", "stream": False, "options": {name: value}}
    r = fake.client.post(path, json=body)
    assert assert_refused(fake, r, 400)["error"] == message
    assert fake.engines.requests == []


V1_CHAT = {"model": "smol", "messages": [{"role": "user", "content": "hi"}]}
ABSURD_V1 = [
    ("/v1/chat/completions", {"max_tokens": 2**40}, "max_tokens: Input should be less than or equal to 16777216"),
    ("/v1/chat/completions", {"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
    ("/v1/chat/completions", {"max_completion_tokens": 2**40},
     "max_completion_tokens: Input should be less than or equal to 16777216"),
    ("/v1/chat/completions", {"n": 10_000}, "n: Input should be less than or equal to 128"),
    ("/v1/chat/completions", {"n": 0}, "n: Input should be greater than or equal to 1"),
    ("/v1/chat/completions", {"seed": 2**40}, "seed: Input should be less than or equal to 4294967295"),
    ("/v1/chat/completions", {"top_logprobs": 1000}, "top_logprobs: Input should be less than or equal to 20"),
    ("/v1/chat/completions", {"stop": ["x"] * 65}, "stop: List should have at most 64 items after validation, not 65"),
    ("/v1/chat/completions", {"stop": "x" * 5000}, "stop.0: String should have at most 4096 characters"),
    ("/v1/chat/completions", {"temperature": 1e300}, "temperature: Input should be less than or equal to 2"),
    ("/v1/chat/completions", {"tools": [{"type": "function", "function": {"name": "f"}}] * 1025},
     "tools: List should have at most 1024 items after validation, not 1025"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2**40}, "max_tokens: Input should be less than or equal to 16777216"),
    ("/v1/completions", {"prompt": "hi", "logprobs": 1000}, "logprobs: Input should be less than or equal to 20"),
    ("/v1/embeddings", {"input": "hi", "dimensions": 2**40}, "dimensions: Input should be less than or equal to 65536"),
]


@pytest.mark.parametrize("path, extra, message", ABSURD_V1, ids=[m for _, _, m in ABSURD_V1])
def test_absurd_v1_values_are_400_naming_the_field(fake, path, extra, message):
    base = V1_CHAT if path == "/v1/chat/completions" else {"model": "smol"}
    r = fake.client.post(path, json={**base, **extra})
    error = assert_refused(fake, r, 400)["error"]
    assert error["message"] == message and error["param"] == message.split(":")[0]
    assert fake.engines.requests == []


def test_too_many_messages_are_400(fake):
    r = fake.client.post("/api/chat", json={**CHAT, "messages": [{"role": "user", "content": ""}] * 65_537})
    assert assert_refused(fake, r, 400)["error"] == "messages: List should have at most 65536 items after validation, not 65537"


def test_too_many_tools_are_400(fake):
    tools = [{"type": "function", "function": {"name": "f"}}] * 1025
    r = fake.client.post("/api/chat", json={**CHAT, "tools": tools})
    assert assert_refused(fake, r, 400)["error"] == "tools: List should have at most 1024 items after validation, not 1025"


def test_a_body_over_the_size_limit_is_413(serve):
    server = serve(max_request_size=4096)
    r = server.client.post("/api/chat", json={**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]})
    assert assert_refused(server, r, 413)["error"] == "Request body exceeds the size limit"
