"""Context shift on the real SmolLM2: a generation that reaches num_ctx goes on, as in Ollama.

At num_ctx 128 a counting prompt of about 30 tokens is asked for 300 tokens. With shift (the
default) the first num_keep tokens stay, half of the rest is discarded and the KV of what follows
moves down in place; the model still sees the last numbers, so it keeps counting, one number
after another, far past what 128 cells hold. Where the cells that would move are shared with
another sequence (prefix sharing), they are evaluated again instead, and the other sequence's
answer does not change. With shift off, or num_predict -2, the generation ends at the window.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from corral.engine.process import Engine
from corral.engine.requests import Final, GenerateRequest, Sampling
from tests.engine.streams import collect
from tests.specs import runtime_spec

pytestmark = pytest.mark.model

NUM_CTX = 128
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
LONG_COUNTING = ", ".join(str(i) for i in range(1, 31)) + ","  # about 90 tokens: shared over MIN_SHARED


def counted(prompt: str, text: str) -> int:
    """How far `prompt` + `text` counts without a gap or a repeat (0 when it breaks at once)."""
    numbers = [int(n) for n in re.findall(r"\d+", prompt + text)]
    run = next((i for i, (a, b) in enumerate(zip(numbers, numbers[1:])) if b != a + 1), len(numbers) - 1)
    return numbers[run]


def ask(name: str, prompt: str, num_predict: int, **fields: object) -> GenerateRequest:
    return GenerateRequest(name, prompt, Sampling(temperature=0.0, num_predict=num_predict), **fields)  # type: ignore[arg-type]


def engine_for(weights: Path) -> Engine:
    # A pool of four windows, so that two sequences never have to pause for cells.
    return Engine(runtime_spec(weights, name="tiny-shift", num_ctx=NUM_CTX, num_batch=64, num_parallel=4), n_slots=4)


async def run(weights: Path, *requests: GenerateRequest) -> list[tuple[str, Final]]:
    engine = engine_for(weights)
    await engine.start()
    try:
        return [await collect(engine, r) for r in requests]
    finally:
        await engine.close()


async def beside(weights: Path, first: GenerateRequest, second: GenerateRequest,
                 then: GenerateRequest) -> list[tuple[str, Final]]:
    """`second` starts once `first` streams its first text, so it shares all `first`'s prompt;
    `then` runs after both."""
    engine = engine_for(weights)
    await engine.start()
    try:
        text, final, other = "", None, None
        async for message in engine.generate(first):
            if isinstance(message, Final):
                final = message
                continue
            text += message.text
            other = other or asyncio.create_task(collect(engine, second))
        assert final is not None and other is not None
        return [(text, final), await other, await collect(engine, then)]
    finally:
        await engine.close()


@pytest.fixture(scope="module")
def alone(smollm2_gguf: Path) -> list[tuple[str, Final]]:
    return asyncio.run(run(smollm2_gguf, ask("shift", COUNTING, 300), ask("no-shift", COUNTING, 300, shift=False),
                           ask("fill", COUNTING, -2)))


def test_a_generation_past_num_ctx_shifts_and_keeps_counting(alone) -> None:
    text, final = alone[0]
    assert (final.done_reason, final.eval_count) == ("length", 300)
    assert final.shifts >= 3 and final.recomputed_shifts == 0  # in place: nothing else sees its cells
    # 300 tokens are about 75 numbers: the count goes on long after the window was first full.
    assert counted(COUNTING, text) >= 60, text


@pytest.mark.parametrize(("index", "name"), [(1, "shift false"), (2, "num_predict -2")])
def test_without_shift_the_generation_ends_at_the_window(alone, index: int, name: str) -> None:
    text, final = alone[index]
    assert final.done_reason == "length", name
    assert final.shifts == final.recomputed_shifts == 0
    assert final.prompt_eval_count + final.prompt_tokens_cached + final.eval_count == NUM_CTX + 1  # every cell, plus the token that did not fit
    assert alone[0][0].startswith(text)  # the same tokens as the shifting run until the window was full


def test_shared_cells_are_recomputed_not_moved(smollm2_gguf: Path) -> None:
    # The second request shares all but one of the first one's prompt cells, so when the first
    # fills the window, the cells it would move down are seen by the other sequence too (which
    # keeps them for prefix reuse after it ends). A third request reuses them from there.
    lone = asyncio.run(run(smollm2_gguf, ask("lone", LONG_COUNTING, 12)))[0]
    (long_text, long_final), (short_text, short_final), (again_text, again_final) = asyncio.run(beside(
        smollm2_gguf, ask("long", LONG_COUNTING, 120), ask("short", LONG_COUNTING, 12), ask("again", LONG_COUNTING, 12)))
    assert short_final.prompt_eval_count == again_final.prompt_eval_count == 1
    assert long_final.eval_count == 120 and long_final.recomputed_shifts >= 1
    assert counted(LONG_COUNTING, long_text) >= 60, long_text
    assert short_text == again_text == lone[0]  # the shared cells did not move under them
