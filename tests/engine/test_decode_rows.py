"""Decoding many sequences in groups (engine/batching.py's CPU_DECODE_ROWS), on the real SmolLM2
in this process: with at most two sequences per decode, five generating sequences take three
decodes a step, every request is answered in full, and each answer starts as with one decode.
And the cells a finished request leaves: kept for prefix reuse, or freed when sharing is off."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.engine.batching import BatchLoop, EmbedBatcher
from corral.engine.llama import Context, Model
from corral.engine.requests import Chunk, Final, GenerateRequest, Sampling
from tests.specs import chatml_prompt, runtime_spec

pytestmark = pytest.mark.model

QUESTIONS = ["Describe the sea.", "Tell me about dogs.", "Write about the rain.", "Describe a forest.",
             "Tell me about a city."]


def answers(weights: Path, rows: int | None, prefix_cache: bool = False) -> tuple[dict[str, str], list[int], int]:
    """Each request's text, the tokens of every decode (with `rows` sequences per decode), and
    the cells still held once all are answered."""
    spec = runtime_spec(weights, name="rows", num_ctx=256, num_parallel=4)
    model = Model([str(weights)], spec.load)
    ctx = Context(model, n_ctx=1024, n_batch=256, n_seq_max=8, n_threads=2, unified=True)
    decodes: list[int] = []
    decode = ctx.decode

    def counted(batch):  # the real decode, recording each batch's size
        decodes.append(batch.n_tokens)
        return decode(batch)

    ctx.decode = counted
    loop = BatchLoop(model, ctx, n_seqs=8, seq_ctx=256, pool=1024,
                     embedder=EmbedBatcher(model, lambda: ctx, limit=256), prefix_cache=prefix_cache)
    loop.decode_rows = rows
    try:
        for i, question in enumerate(QUESTIONS):
            loop.submit(GenerateRequest(f"q{i}", chatml_prompt(question), Sampling(temperature=0.0, num_predict=24)))
        texts: dict[str, str] = {}
        finals: list[Final] = []
        while loop.busy:
            for message in loop.step():
                if isinstance(message, Chunk):
                    texts[message.id] = texts.get(message.id, "") + message.text
                elif isinstance(message, Final):
                    finals.append(message)
        assert sorted(f.id for f in finals) == [f"q{i}" for i in range(len(QUESTIONS))]
        assert all(f.eval_count == 24 for f in finals)
        return texts, decodes, loop.stats().cached_cells
    finally:
        loop.close()
        ctx.close()
        model.close()


def test_generating_sequences_are_decoded_in_groups(smollm2_gguf: Path) -> None:
    together, one_decode, _ = answers(smollm2_gguf, None)
    grouped, decodes, _ = answers(smollm2_gguf, 2)
    # One decode reads the five prompts; then each of the 23 steps left decodes 5 tokens at once,
    # or 2 + 2 + 1 in groups.
    assert one_decode == [one_decode[0]] + [5] * 23
    assert decodes == [one_decode[0]] + [2, 2, 1] * 23
    # llama.cpp is not batch-invariant: a greedy answer may part after a near tie; bound it.
    for key, text in together.items():
        shared = next((i for i, (a, b) in enumerate(zip(text, grouped[key])) if a != b), min(len(text), len(grouped[key])))
        assert shared >= min(len(text), 40), (text, grouped[key])


@pytest.mark.parametrize(("prefix_cache", "kept"), [(True, True), (False, False)])
def test_finished_requests_keep_their_cells_only_for_prefix_sharing(smollm2_gguf: Path, prefix_cache, kept) -> None:
    # Idle cells are not free to keep: every decode's attention scans the cells in use.
    _, _, cached = answers(smollm2_gguf, None, prefix_cache=prefix_cache)
    assert (cached > 0) is kept
