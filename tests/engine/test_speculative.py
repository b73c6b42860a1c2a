"""Speculative decoding: the accept rule, and greedy output with the test model drafting for itself.

The real-model test runs llama.cpp in the test process (as the worker would), one sequence at
temperature 0: plain decoding one token a step against draft-and-verify rounds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.compiler.spec import LoadOptions
from corral.engine.requests import Sampling
from corral.engine.speculative import accepted, speculates

OPTIONS = LoadOptions(num_ctx=512, num_batch=64, num_parallel=1, num_thread=0, use_mmap=True,
                      n_gpu_layers=0, main_gpu=None, tensor_split=None)


@pytest.mark.parametrize(("proposed", "verified", "expected"), [
    ([5, 6, 7], [5, 6, 7, 8], [5, 6, 7, 8]),  # all accepted, plus the target's next
    ([5, 6, 7], [5, 9, 1, 1], [5, 9]),  # the first mismatch: the target's token replaces it
    ([5, 6, 7], [4, 6, 7, 8], [4]),  # nothing accepted: one token, as plain decoding gives
    ([], [3], [3]),  # no proposals
])
def test_the_longest_matching_run_is_accepted_plus_one(proposed: list[int], verified: list[int],
                                                       expected: list[int]) -> None:
    assert accepted(proposed, verified) == expected


@pytest.mark.parametrize(("sampling", "grammar", "expected"), [
    (Sampling(temperature=0.0), None, True),
    (Sampling(temperature=0.7), None, False),  # sampled: decoded plainly
    (Sampling(temperature=0.0), 'root ::= "a"', False),
    (Sampling(temperature=0.0, repeat_penalty=1.1), None, False),
])
def test_only_greedy_sequences_speculate(sampling: Sampling, grammar: str | None, expected: bool) -> None:
    assert speculates(sampling, grammar) is expected


PROMPT = "<|im_start|>user\nWrite a short story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.model
def test_greedy_output_is_the_same_with_the_model_drafting_for_itself(smollm2_gguf: Path) -> None:
    from corral.engine.llama import Batch, Context, Model
    from corral.engine.speculative import Drafter, Greedy, verify

    model = Model(str(smollm2_gguf), OPTIONS)
    target = Context(model, n_ctx=512, n_batch=64, n_seq_max=1, n_threads=2, unified=True)
    draft_ctx = Context(model, n_ctx=512, n_batch=64, n_seq_max=1, n_threads=2, unified=True)
    batch, greedy = Batch(64), Greedy()
    drafter = Drafter(model, draft_ctx, n_draft=4)
    prompt = model.tokenize(PROMPT, add_special=False, parse_special=True)
    try:
        def first() -> int:
            target.seq_rm(0, -1, -1)
            batch.clear()
            batch.add(prompt[:-1], 0, 0, output="none")
            assert target.decode(batch) == 0
            batch.clear()
            index = batch.add(prompt[-1:], len(prompt) - 1, 0)
            assert target.decode(batch) == 0
            return greedy.pick(target, index)

        n = 60
        plain = [first()]
        while len(plain) < n:  # one token a decode
            batch.clear()
            batch.add([plain[-1]], len(prompt) + len(plain) - 1, 0)
            assert target.decode(batch) == 0
            plain.append(greedy.pick(target, 0))

        spoken, rounds = [first()], 0
        while len(spoken) < n:
            proposed = drafter.propose(prompt + spoken, 4)
            tokens = verify(target, batch, greedy, 0, len(prompt) + len(spoken) - 1, spoken[-1], proposed)
            assert tokens is not None
            spoken += tokens
            rounds += 1
        spoken = spoken[:n]
    finally:
        drafter.close()
        greedy.close()
        batch.close()
        target.close()
        model.close()
    # A model drafting for itself is right nearly always: far fewer target decodes than tokens.
    assert rounds < n / 2
    # Token for token the plain answer. (Verifying five tokens in one batch runs other kernels
    # than one at a time, and llama.cpp's CPU sums are not batch-invariant in general; for this
    # model and prompt they agree, which is what a regression would break.)
    assert spoken == plain


async def _answers(weights: Path, draft: bool) -> list[str]:
    import asyncio  # noqa: F401  (the engine's streams are asyncio)

    from corral.compiler.resolve import weights_ref
    from corral.engine.process import Engine
    from corral.engine.requests import Chunk, GenerateRequest
    from tests.specs import chatml_prompt, runtime_spec

    spec = runtime_spec(weights, name="tiny-draft", num_ctx=512, num_parallel=1)
    if draft:
        spec = spec.model_copy(update={"draft": weights_ref(weights),
                                       "parameters": {**spec.parameters, "draft_num_predict": 4}})
    engine = Engine(spec, n_slots=2)
    await engine.start()
    texts = []
    try:
        for i, (question, sampling) in enumerate([
                ("Write a short story about a lighthouse keeper.", Sampling(temperature=0.0, num_predict=48)),
                ("Name three colors.", Sampling(temperature=0.0, num_predict=20, seed=1)),
                ("Say hello.", Sampling(temperature=0.7, seed=3, num_predict=12))]):  # sampled: no draft
            text = ""
            async for message in engine.generate(GenerateRequest(f"r{i}", chatml_prompt(question), sampling)):
                if isinstance(message, Chunk):
                    text += message.text
            texts.append(text)
    finally:
        await engine.close()
    return texts


@pytest.mark.model
def test_a_worker_with_a_draft_answers_as_one_without(smollm2_gguf: Path) -> None:
    import asyncio

    plain = asyncio.run(_answers(smollm2_gguf, draft=False))
    drafted = asyncio.run(_answers(smollm2_gguf, draft=True))
    assert drafted[:2] == plain[:2]  # greedy: token for token
    assert drafted[2] == plain[2]  # sampled with a seed: decoded plainly, so the same too
