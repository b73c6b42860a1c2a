"""Prefix sharing: the longest cached prefix of a prompt is reused by other sequences.

The first part specifies the bookkeeping (prefix matching and the cells a shared pool really
uses); the second runs the real SmolLM2 at temperature 0 with a long shared system prompt and
compares every answer with the one a run without sharing gives.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from corral.engine.prefix import CellLedger, common_prefix, longest_prefix
from corral.engine.process import Engine
from corral.engine.requests import Final, GenerateRequest, Sampling
from tests.engine.streams import collect
from tests.specs import runtime_spec

tokens = st.lists(st.integers(0, 3), max_size=40)


@given(tokens, tokens)
def test_common_prefix_is_the_first_difference(a: list[int], b: list[int]) -> None:
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    assert common_prefix(a, b) == n


@pytest.mark.parametrize(("prompt", "expected"), [
    ([1, 2, 3, 4], ("b", 3)),  # the longest wins
    ([1, 2, 9], ("a", 2)),  # the first of equals
    ([7], (None, 0)),  # nothing shared
])
def test_longest_prefix_names_its_owner(prompt: list[int], expected: tuple[str | None, int]) -> None:
    cached = [("a", [1, 2, 5]), ("b", [1, 2, 3, 8]), ("c", [])]
    assert longest_prefix(prompt, cached) == expected


def test_a_shared_prefix_uses_its_cells_once() -> None:
    ledger = CellLedger(3)
    ledger.append(0, 100)  # a system prompt and a question
    ledger.copy(0, 1, 80)  # the system prompt, shared
    ledger.copy(0, 2, 80)
    ledger.append(1, 10)
    ledger.append(2, 5)
    assert ledger.used == 115
    assert [ledger.held(s) for s in range(3)] == [100, 90, 85]
    assert ledger.distinct([1, 2]) == 95
    ledger.truncate(0, 0)  # the first request's sequence is dropped: the shared cells stay
    assert ledger.used == 95
    ledger.truncate(1, 0)
    ledger.truncate(2, 40)
    assert ledger.used == 40
    ledger.truncate(2, 0)
    assert ledger.used == 0


def test_copying_replaces_what_the_destination_held() -> None:
    ledger = CellLedger(2)
    ledger.append(0, 10)
    ledger.append(1, 30)
    ledger.copy(0, 1, 4)
    assert (ledger.used, ledger.held(1)) == (10, 4)


def test_a_shift_forgets_a_middle_range_and_moves_the_rest_down() -> None:
    ledger = CellLedger(2)
    ledger.append(0, 100)
    ledger.copy(0, 1, 30)  # another sequence sees the first 30
    assert (ledger.private(0, 30), ledger.private(0, 29), ledger.private(1, 0)) == (True, False, False)
    ledger.remove(0, 5, 50)  # keep 5, discard 45: positions 50.. are now 5..
    assert (ledger.held(0), ledger.used) == (55, 80)  # the 25 shared ones it dropped stay for sequence 1
    assert ledger.private(0, 5)  # what moved down was its own
    ledger.truncate(1, 0)
    assert ledger.used == 55


# -- the real model ----------------------------------------------------------------------------

SYSTEM = ("You are the help desk of the Harbour Street Library. " + " ".join(
    f"Rule {i}: members may borrow {i % 5 + 1} books in section {i}, and return them within {i % 3 + 2} weeks."
    for i in range(24)))
QUESTIONS = ["How many books may I borrow in section 3?", "When must I return books from section 7?",
             "What is the library called?", "Can I borrow books in section 12?"]


def prompt(question: str) -> str:
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            "<|im_start|>assistant\n")


def request(i: int) -> GenerateRequest:
    return GenerateRequest(f"q{i}", prompt(QUESTIONS[i]), Sampling(temperature=0.0, num_predict=24))


async def answers(weights: Path, *, prefix_cache: bool) -> tuple[list[tuple[str, Final]], list[tuple[str, Final]]]:
    """The questions one after another, then all at once (after one more warms the cache)."""
    engine = Engine(runtime_spec(weights, name="tiny-prefix", num_ctx=1024, num_parallel=4),
                    n_slots=8, prefix_cache=prefix_cache)
    await engine.start()
    try:
        alone = [await collect(engine, request(i)) for i in range(len(QUESTIONS))]
        await collect(engine, GenerateRequest("warm", prompt("Hello."), Sampling(temperature=0.0, num_predict=4)))
        together = await asyncio.gather(*(collect(engine, request(i)) for i in range(len(QUESTIONS))))
    finally:
        await engine.close()
    return alone, list(together)


@pytest.mark.model
def test_a_shared_system_prompt_is_evaluated_once_and_answers_do_not_change(smollm2_gguf: Path) -> None:
    plain_alone, plain_together = asyncio.run(answers(smollm2_gguf, prefix_cache=False))
    shared_alone, shared_together = asyncio.run(answers(smollm2_gguf, prefix_cache=True))
    # Without sharing every prompt is evaluated in full.
    assert all(f.prompt_tokens_cached == 0 for _, f in plain_alone + plain_together)
    n_prompt = [f.prompt_eval_count for _, f in plain_alone]
    assert min(n_prompt) > 400, "the system prompt is meant to be long"
    # With it, the first request evaluates its whole prompt and every later one only what
    # follows the system prompt: the rest is reported as cached.
    assert shared_alone[0][1].prompt_tokens_cached == 0
    for (_, final), total in zip(shared_alone[1:] + shared_together, n_prompt[1:] + n_prompt):
        assert final.prompt_tokens_cached > 400
        assert final.prompt_eval_count + final.prompt_tokens_cached == total
        assert final.prompt_eval_count < 40
    # llama.cpp's CPU kernels are not batch-invariant: a reused prefix's cells were computed in
    # another batch (with other tokens in its last micro-batch, and attention over another number
    # of cells) than a full evaluation computes them in, so the sums run in another order and a
    # greedy answer may part ways after a near tie, one after another or all at once, with
    # sharing or (for the concurrent runs) without. Bound it by the start every answer shares
    # with the plain lone run.
    agree = [same_start(text, lone) for (text, _), (lone, _) in
             zip(shared_alone + shared_together + plain_together, plain_alone * 3)]
    assert all(n >= 12 for n in agree), (agree, shared_alone, plain_alone)
    assert agree[0] == len(plain_alone[0][0])  # the first request shared nothing: the same answer


def same_start(text: str, lone: str) -> int:
    return next((i for i, (a, b) in enumerate(zip(text, lone)) if a != b), min(len(text), len(lone)))
