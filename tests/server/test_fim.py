"""Fill-in-the-middle (`suffix`) and generate's `context`.

The FIM tokens are found in the vocabulary and the prompt assembled from them (tables); a model
without them refuses a suffix with a 400 naming it, on both APIs; a tiny model whose GGUF names
FIM tokens gets the assembled prompt. The test models have no FIM tokens, so what a real model
writes in the middle is not checked; `context` is, with SmolLM2: the second call continues the first.
"""

from __future__ import annotations

import ollama
import pytest

from corral.compiler.fim import FimTokens, fim_from_vocabulary
from corral.dsl import parse_modelfile
from corral.store.create import create_model
from tests.ggufs import TinyLlama, write_tiny_llama
from tests.server.smol import serving_smol
from tests.specs import cpu_options

QWEN = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
VOCAB = ("<s>", "</s>", "a", "b", *QWEN, "<fim_prefix>", "<fim_suffix>", "<fim_middle>")


@pytest.mark.parametrize("metadata, tokens, expected", [
    ({"tokenizer.ggml.fim_pre_token_id": 4, "tokenizer.ggml.fim_suf_token_id": 5,
      "tokenizer.ggml.fim_mid_token_id": 6}, VOCAB, QWEN),
    ({"tokenizer.ggml.prefix_token_id": 7, "tokenizer.ggml.suffix_token_id": 8,
      "tokenizer.ggml.middle_token_id": 9}, VOCAB, ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")),
    ({}, VOCAB, QWEN),  # no ids: the first family whose three names are all there
    ({}, ("<s>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>"), ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")),
    ({}, ("<s>", "▁<PRE>", "▁<SUF>", "▁<MID>"), ("▁<PRE>", "▁<SUF>", "▁<MID>")),
    ({}, ("<s>", "<fim_prefix>", "<fim_suffix>"), None),  # no middle token: no FIM
    ({"tokenizer.ggml.fim_pre_token_id": 40, "tokenizer.ggml.fim_suf_token_id": 5,
      "tokenizer.ggml.fim_mid_token_id": 6}, ("<s>",), None),  # ids past the vocabulary
    ({}, ("<s>", "a"), None),
])
def test_fim_tokens_come_from_the_vocabulary(metadata, tokens, expected):
    found = fim_from_vocabulary(metadata, tokens)
    assert (found and (found.prefix, found.suffix, found.middle)) == (expected and tuple(expected))


def test_the_fim_prompt_is_prefix_suffix_middle():
    assert FimTokens(*QWEN).prompt("def f(x):\n    ", "\n    return y") == (
        "<|fim_prefix|>def f(x):\n    <|fim_suffix|>\n    return y<|fim_middle|>")


def test_a_suffix_for_a_model_without_fim_tokens_is_a_400_naming_it(fake):
    r = fake.client.post("/api/generate", json={"model": "smol", "prompt": "def f(", "suffix": ")"})
    assert r.status_code == 400
    assert r.json() == {"error": '"smol:latest" does not support insert: its vocabulary has no '
                                 "fill-in-the-middle tokens, so send the request without suffix"}
    r = fake.client.post("/v1/completions", json={"model": "smol", "prompt": "def f(", "suffix": ")"})
    assert r.status_code == 400 and "does not support insert" in r.json()["error"]["message"]
    assert fake.engines.requests == []


@pytest.fixture
def coder(fake, tmp_path) -> str:
    write_tiny_llama(tmp_path / "coder.gguf", TinyLlama(fim=True, name="Tiny Coder"))
    definition = parse_modelfile("FROM ./coder.gguf\n", str(tmp_path / "Modelfile")).definition
    create_model(fake.store, "coder", definition, base_dir=tmp_path, options=cpu_options(num_parallel=1))
    return "coder"


@pytest.mark.parametrize("path, body", [
    ("/api/generate", {"stream": False}),
    ("/v1/completions", {}),
])
def test_a_suffix_is_sent_between_the_models_fim_tokens(fake, coder, path, body):
    r = fake.client.post(path, json={"model": coder, "prompt": "hello", "suffix": "world", **body})
    assert r.status_code == 200, r.text
    assert fake.engines.requests[-1].prompt == "▁hellohello▁worldworld▁the"


def test_generate_returns_a_context_and_prepends_the_one_it_is_given(fake):
    first = fake.client.post("/api/generate", json={"model": "smol", "prompt": "Hi", "stream": False}).json()
    assert isinstance(first["context"], list) and first["context"]
    fake.client.post("/api/generate", json={"model": "smol", "prompt": "Again", "stream": False,
                                            "context": [5, 6, 7]})
    assert fake.engines.requests[-1].prompt_tokens[:3] == (5, 6, 7)
    raw = fake.client.post("/api/generate", json={"model": "smol", "prompt": "Hi", "raw": True, "stream": False})
    assert "context" not in raw.json()  # raw answers carry none, as in Ollama


@pytest.mark.model
def test_a_second_generate_with_the_first_ones_context_continues_it(tmp_path, smollm2_gguf):
    with serving_smol(tmp_path, smollm2_gguf, "corral_context") as live:
        client = ollama.Client(host=live.url, timeout=600)
        greedy = {"temperature": 0, "num_predict": 16}
        first = client.generate(model="smol", prompt="My name is Ada. Remember it.", options=greedy)
        assert first.context and len(first.context) >= first.prompt_eval_count
        second = client.generate(model="smol", prompt="What is my name?", context=first.context, options=greedy)
        assert second.context[:len(first.context)] == first.context  # the first exchange, then this one
        alone = client.generate(model="smol", prompt="What is my name?", options=greedy)
        assert len(second.context) > len(first.context) + 5 and alone.context != second.context
