"""Fuzzing the API's request schemas: bodies built from each route's own field names (and from the
Options fields), with values of every JSON type, huge numbers, deep and wide nesting, missing
fields, posted to a live server over scripted engines. Every answer is a success or a 4xx JSON
error naming no host path: never a 500, never a hang (each request has a timeout).
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import BaseModel

from corral.server import openai_schemas, schemas

ROUTES: dict[str, type[BaseModel]] = {
    "/api/generate": schemas.GenerateBody,
    "/api/chat": schemas.ChatBody,
    "/api/embed": schemas.EmbedBody,
    "/api/embeddings": schemas.EmbeddingsBody,
    "/api/show": schemas.ShowBody,
    "/v1/chat/completions": openai_schemas.ChatCompletionBody,
    "/v1/completions": openai_schemas.CompletionBody,
    "/v1/embeddings": openai_schemas.EmbeddingBody,
}
OPTION_NAMES = ["num_ctx", "num_predict", "temperature", "top_k", "top_p", "seed", "stop", "num_batch",
                "num_thread", "num_gpu", "num_keep", "repeat_penalty", "mirostat", "typical_p", "min_p"]

HUGE = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, 1e308, -1e308, float("inf"), float("nan"), -1, 0])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), HUGE,
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
                    st.sampled_from(["smol", "smol:latest", "", "user", "assistant", "json", "10m", "-1"]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                    st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                    max_leaves=12)
MESSAGE = st.fixed_dictionaries({"role": st.one_of(st.sampled_from(["user", "system", "assistant", "tool"]), JSON)},
                                optional={"content": st.one_of(st.text(max_size=40), JSON), "images": JSON,
                                          "tool_calls": JSON})


def field_value(name: str) -> st.SearchStrategy:
    if name == "model":
        return st.one_of(st.just("smol"), JSON)
    if name == "messages":
        return st.one_of(st.lists(MESSAGE, max_size=3), JSON)
    if name == "options":
        return st.one_of(st.dictionaries(st.sampled_from(OPTION_NAMES), JSON, max_size=4), JSON)
    if name == "stream":
        return st.one_of(st.just(False), JSON)
    return JSON


def bodies(schema: type[BaseModel]) -> st.SearchStrategy:
    names = sorted({f.alias or n for n, f in schema.model_fields.items()} | {"model", "stream"})
    return st.one_of(
        st.fixed_dictionaries({}, optional={n: field_value(n) for n in names}),
        JSON,  # not even an object
    )


# Found by this fuzzer: `"stop": null` on the OpenAI routes was a 500 (pydantic applied the stop
# count's bound to the null).
@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
def test_null_stop_on_the_openai_routes_is_not_a_500(fake, route: str) -> None:
    body = {"model": "smol", "stop": None, "messages": [{"role": "user", "content": "Hi"}], "prompt": "Hi"}
    assert fake.client.post(route, json=body).status_code == 200


def deep(n: int) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize("route", list(ROUTES))
def test_fuzzed_bodies_get_a_success_or_a_4xx(fake, route: str) -> None:
    fake.engines.pieces = ["ok"]

    @given(body=bodies(ROUTES[route]), raw=st.sampled_from([None, None, None, "{", deep(10_000), '{"model": "smol"',
                                                             "\xff", '{"model": "smol", "model": 1}']))
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    def check(body, raw) -> None:
        if raw is None:
            content = json.dumps(body, allow_nan=True).encode()
        else:
            content = raw.encode("utf-8", "surrogatepass") if raw != "\xff" else b"\xff"
        try:
            r = fake.client.post(route, content=content, headers={"content-type": "application/json"}, timeout=20)
        except httpx.TimeoutException:
            pytest.fail(f"{route} hung on {content[:200]!r}")
        assert r.status_code < 500, f"{route} {content[:300]!r} -> {r.status_code} {r.text[:300]}"
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith("application/json"), r.text
            assert "error" in r.json()
            assert str(fake.store.root) not in r.text and "Traceback" not in r.text

    check()
    assert fake.client.get("/api/version", timeout=5).status_code == 200
