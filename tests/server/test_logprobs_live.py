"""Log-probabilities, stop sequences and the KV pool's report with SmolLM2 on the real server,
through the official clients (the shared server of test_end_to_end.py).

At temperature 0 the chosen token is the most likely one, so it heads its own top list; every
logprob is <= 0, each top list is as long as asked and sorted; the tokens' bytes are the text."""

from __future__ import annotations

import re
import threading

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.server.test_end_to_end import server, store_root  # noqa: F401 (the shared real server)
from tests.waiting import until

pytestmark = pytest.mark.model

QUESTION = [{"role": "user", "content": "Name three colours."}]


def check(entries: list, text: str, top: int) -> None:
    """The invariants above, over (token, logprob, bytes, [(token, logprob)]) tuples (bytes None where
    a client's types leave them out, as the `ollama` client's do)."""
    assert entries
    for token, logprob, raw, alternatives in entries:
        assert logprob <= 0
        assert len(alternatives) == top
        values = [v for _, v in alternatives]
        assert values == sorted(values, reverse=True)
        assert alternatives[0][0] == token and alternatives[0][1] == pytest.approx(logprob, abs=1e-4)
    if all(raw is not None for _, _, raw, _ in entries):
        assert b"".join(bytes(raw) for _, _, raw, _ in entries).decode() == text
    assert "".join(token for token, _, _, _ in entries) == text


@pytest.fixture
def oai(server):  # noqa: F811
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300) as client:
        yield client


def test_chat_completion_logprobs(oai):
    done = oai.chat.completions.create(model="smol", messages=QUESTION, temperature=0, max_tokens=12,
                                       logprobs=True, top_logprobs=3)
    content = done.choices[0].logprobs.content
    check([(c.token, c.logprob, c.bytes, [(t.token, t.logprob) for t in c.top_logprobs]) for c in content],
          done.choices[0].message.content, 3)
    chunks = list(oai.chat.completions.create(model="smol", messages=QUESTION, temperature=0, max_tokens=12,
                                              logprobs=True, top_logprobs=3, stream=True))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == pytest.approx([(c.token, c.logprob) for c in content])


def test_completion_legacy_logprobs(oai):
    done = oai.completions.create(model="smol", prompt="The capital of France is", temperature=0, max_tokens=8,
                                  logprobs=2)
    lp = done.choices[0].logprobs
    assert "".join(lp.tokens) == done.choices[0].text
    assert all(v <= 0 for v in lp.token_logprobs) and all(len(t) <= 2 for t in lp.top_logprobs)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert max(top.values()) == pytest.approx(value, abs=1e-4) and token in top


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_generate_and_chat_logprobs(server, stream):  # noqa: F811
    client = ollama.Client(host=server.url, timeout=300)
    options = {"temperature": 0, "num_predict": 10}
    parts = client.chat(model="smol", messages=QUESTION, options=options, logprobs=True, top_logprobs=3,
                        stream=stream)
    parts = list(parts) if stream else [parts]
    entries = [(e.token, e.logprob, None, [(t.token, t.logprob) for t in e.top_logprobs])
               for p in parts for e in (p.logprobs or [])]
    check(entries, "".join(p.message.content for p in parts), 3)
    answer = client.generate(model="smol", prompt="Count: one, two,", options=options, logprobs=True, top_logprobs=1)
    check([(e.token, e.logprob, None, [(t.token, t.logprob) for t in e.top_logprobs]) for e in answer.logprobs],
          answer.response, 1)


def test_anthropic_stop_sequence(server):  # noqa: F811
    client = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=300)
    ask = {"model": "smol", "max_tokens": 30, "messages": QUESTION, "extra_body": {"temperature": 0}}
    plain = client.messages.create(**ask).content[0].text
    words = re.findall(r"[A-Za-z]{3,}", plain)
    assert len(words) >= 2, plain
    stop = words[1]
    done = client.messages.create(**ask, stop_sequences=[stop])
    assert (done.stop_reason, done.stop_sequence) == ("stop_sequence", stop)
    assert done.content[0].text == plain[: plain.index(stop)]
    with client.messages.stream(**ask, stop_sequences=[stop]) as streamed:
        final = streamed.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)
    ended = client.messages.create(**{**ask, "max_tokens": 200})
    assert ended.stop_reason in ("end_turn", "max_tokens") and ended.stop_sequence is None


def kv_usage(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=30).text
    return float(re.search(r"^corral_kv_cache_usage_perc (\S+)$", text, re.M).group(1))


def test_metrics_show_the_pool_in_use_while_streaming(server):  # noqa: F811
    seen: list[float] = []
    with httpx.stream("POST", server.url + "/api/generate", timeout=300, json={
            "model": "smol", "prompt": "Write a long story about a dragon.",
            "options": {"temperature": 0, "num_predict": 200}}) as response:
        for i, _line in enumerate(response.iter_lines()):
            if i == 20:
                seen.append(kv_usage(server.url))
    assert seen and seen[0] > 0
    until(lambda: kv_usage(server.url) == 0.0, timeout=30)
