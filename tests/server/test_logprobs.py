"""Log-probabilities in each API's shape (and Anthropic's stop_sequence), over the real runtime with scripted engines: piece i of
the script has logprob -0.5*i, and its alternatives are the piece, then "alt1", "alt2"... each 1.0
lower (tests/server/fakes.py). Real-model checks are in tests/server/test_logprobs_live.py."""

from __future__ import annotations

import json

import openai
import pytest

from tests.server.test_native_api import lines
from tests.server.test_openai_api import events

PIECES = ["Hello", ",", " world"]


def native(top: int) -> list[dict]:
    """What Ollama's API sends for the script's pieces with `top` alternatives each."""
    out = []
    for i, piece in enumerate(PIECES):
        entry = {"token": piece, "logprob": -0.5 * i, "bytes": list(piece.encode())}
        alts = [(piece, -0.5 * i)] + [(f"alt{j}", -0.5 * i - j) for j in range(1, top)]
        if top:
            entry["top_logprobs"] = [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in alts]
        out.append(entry)
    return out


@pytest.mark.parametrize("path, body", [
    ("/api/generate", {"prompt": "Hi"}),
    ("/api/chat", {"messages": [{"role": "user", "content": "Hi"}]}),
])
@pytest.mark.parametrize("top", [0, 3])
def test_native_merged_and_streamed(fake, path, body, top):
    ask = {"model": "smol", **body, "logprobs": True, "top_logprobs": top}
    merged = fake.client.post(path, json={**ask, "stream": False}).json()
    assert merged["logprobs"] == native(top)
    chunks = lines(fake.client.post(path, json=ask))
    assert [c["logprobs"] for c in chunks[:-1]] == [[e] for e in native(top)]
    assert "logprobs" not in chunks[-1]
    request = fake.engines.requests[-1]
    assert (request.logprobs, request.top_logprobs) == (True, top)


@pytest.mark.parametrize("path, body", [
    ("/api/generate", {"prompt": "Hi"}),
    ("/api/chat", {"messages": [{"role": "user", "content": "Hi"}]}),
])
def test_native_without_logprobs_sends_none_and_asks_none(fake, path, body):
    merged = fake.client.post(path, json={"model": "smol", **body, "stream": False}).json()
    assert "logprobs" not in merged
    assert all("logprobs" not in c for c in lines(fake.client.post(path, json={"model": "smol", **body})))
    assert not any(r.logprobs for r in fake.engines.requests)


@pytest.mark.parametrize("top", [-1, 21])
def test_native_top_logprobs_out_of_range(fake, top):
    r = fake.client.post("/api/generate", json={"model": "smol", "prompt": "Hi", "logprobs": True,
                                                "top_logprobs": top})
    assert r.status_code == 400 and r.json()["error"] == "top_logprobs must be between 0 and 20"


@pytest.fixture
def client(fake):
    with openai.OpenAI(base_url=fake.url + "/v1", api_key="anything", max_retries=0) as client:
        yield client


def test_chat_completion_logprobs(fake, client):
    done = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}],
                                          logprobs=True, top_logprobs=2)
    content = done.choices[0].logprobs.content
    assert [(c.token, c.logprob, c.bytes) for c in content] == \
        [(p, -0.5 * i, list(p.encode())) for i, p in enumerate(PIECES)]
    assert [[(t.token, t.logprob) for t in c.top_logprobs] for c in content] == \
        [[(p, -0.5 * i), ("alt1", -0.5 * i - 1)] for i, p in enumerate(PIECES)]


def test_chat_completion_stream_logprobs(fake, client):
    chunks = list(client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}],
                                                 logprobs=True, top_logprobs=1, stream=True))
    streamed = [c.choices[0].logprobs.content for c in chunks if c.choices and c.choices[0].logprobs]
    assert [[(e.token, e.logprob, [t.token for t in e.top_logprobs]) for e in part] for part in streamed] == \
        [[(p, -0.5 * i, [p])] for i, p in enumerate(PIECES)]


def test_chat_completion_without_logprobs(fake, client):
    done = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}])
    assert done.choices[0].logprobs is None and not fake.engines.requests[0].logprobs


def legacy(top: int, start: int = 0) -> dict:
    offsets = [sum(len(p) for p in PIECES[:i]) for i in range(len(PIECES))]
    return {"tokens": PIECES, "token_logprobs": [-0.5 * i for i in range(len(PIECES))],
            "top_logprobs": [{p: -0.5 * i, **{f"alt{j}": -0.5 * i - j for j in range(1, top)}}
                             if top else {} for i, p in enumerate(PIECES)],
            "text_offset": offsets}


@pytest.mark.parametrize("top", [0, 2])
def test_completion_logprobs(fake, top):
    body = {"model": "smol", "prompt": "Hi", "logprobs": top}
    done = fake.client.post("/v1/completions", json=body).json()
    assert done["choices"][0]["logprobs"] == legacy(top)
    streamed = [json.loads(e) for e in events(fake.client.post("/v1/completions", json={**body, "stream": True}))[:-1]]
    parts = [c["choices"][0]["logprobs"] for c in streamed if c["choices"] and "logprobs" in c["choices"][0]]
    whole = legacy(top)
    assert parts == [{k: [v[i]] for k, v in whole.items()} for i in range(len(PIECES))]


def test_completion_without_logprobs(fake):
    done = fake.client.post("/v1/completions", json={"model": "smol", "prompt": "Hi"}).json()
    assert "logprobs" not in done["choices"][0] and not fake.engines.requests[0].logprobs


@pytest.mark.parametrize("matched, asked, reason, sequence", [
    ("END", ["END"], "stop_sequence", "END"),
    ("<|im_end|>", ["END"], "end_turn", None),  # the model's own stop is its end of turn
    (None, ["END"], "end_turn", None),
    (None, None, "end_turn", None),
])
def test_anthropic_reports_the_stop_sequence(fake, matched, asked, reason, sequence):
    import anthropic

    fake.engines.stop_sequence = matched
    with anthropic.Anthropic(base_url=fake.url, api_key="anything", max_retries=0) as client:
        ask = {"model": "smol", "max_tokens": 9, "messages": [{"role": "user", "content": "Hi"}]}
        if asked:
            ask["stop_sequences"] = asked
        done = client.messages.create(**ask)
        with client.messages.stream(**ask) as stream:
            final = stream.get_final_message()
    assert (done.stop_reason, done.stop_sequence) == (reason, sequence)
    assert (final.stop_reason, final.stop_sequence) == (reason, sequence)
