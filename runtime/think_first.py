"""Thinking before a constrained answer: a thinking model given a grammar (`format`, tools) thinks
freely first, and the grammar holds only its answer, as Ollama does.

The first generation runs without the grammar and stops where the thinking ends (the tag that
closes it is one of its stop strings); the second continues the same text (the prompt, the
thinking, what closes it and opens an answer) with the grammar, the cells of all that shared from
the first through the engine's prefix cache, so nothing is evaluated twice. A model that starts
to answer without thinking is stopped there and answers again, held by the grammar. The caller
gets one stream: `Piece`s (raw text, its log-probabilities, and how it splits into thinking and
answer) and one Final that adds the counts of both generations.

Without a grammar, or with thinking off, `pieces` is the plain single generation.
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import AsyncIterator, Protocol

from corral.engine.requests import Chunk, Final, GenerateRequest, TokenLogprob
from corral.runtime.thinking import CLOSE, Split, ThinkingParser

__all__ = ["Piece", "Turn", "pieces", "turn_for"]


@dataclass(frozen=True)
class Piece:
    """Generated text as the caller needs it: `raw` for the context, `split` for the events."""

    raw: str
    split: Split
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Turn:
    """How one thinking format moves from thinking to a constrained answer."""

    end: str  # ends the thinking: a stop string of the first generation (not in its text)
    resume: str  # put after the thinking: closes it and opens the answer
    direct: str  # put after the prompt when the model answered without thinking


def turn_for(parser: str) -> Turn:
    """The Turn of a thinking parser (corral.runtime.thinking's names)."""
    if parser == "harmony":  # the analysis message ends, the final channel's message begins
        return Turn("<|end|>", "<|end|><|start|>assistant<|channel|>final<|message|>", "<|channel|>final<|message|>")
    return Turn(CLOSE, CLOSE + "\n\n", "")


class Engine(Protocol):
    def generate(self, req: GenerateRequest) -> AsyncIterator[Chunk | Final]: ...

    async def tokenize(self, text: str) -> list[int]: ...


async def pieces(engine: Engine, request: GenerateRequest, thinker: ThinkingParser | None,
                 turn: Turn | None) -> AsyncIterator[Piece | Final]:
    """The generation for `request`: thinking first, then the grammar's answer when `turn` is
    given (and the request has a grammar), else one plain generation."""
    if turn is None or thinker is None or request.grammar is None:
        async for item in _plain(engine, request, thinker):
            yield item
        return
    first = replace(request, grammar=None, stop=(*request.stop, turn.end))
    thought, final, answered = "", None, False
    async with aclosing(engine.generate(first)) as items:
        async for item in items:
            if isinstance(item, Final):
                final = item
                continue
            split = thinker.feed(item.text)
            if split.content.strip():
                answered = True  # it answers without thinking: again, held by the grammar
                break
            thought += item.text
            yield Piece(item.text, Split(thinking=split.thinking), item.logprobs)
    rest = thinker.finish()
    if rest.thinking:
        yield Piece("", Split(thinking=rest.thinking))
    if answered:  # what was already sent (whitespace, a header) stays in the prompt: the context holds it
        opening = "" if thought.endswith(turn.direct) else turn.direct
    elif final is not None and final.stop_sequence == turn.end:
        opening = turn.resume
    else:  # it ended while thinking (end of generation, a stop of the request's, num_predict)
        if final is not None:
            yield final
        return
    budget = request.sampling.num_predict
    used = final.eval_count if final is not None else 0
    if final is not None and 0 < budget <= used:  # the thinking used all of num_predict
        yield replace(final, done_reason="length", stop_sequence=None)
        return
    text = thought + opening
    second = replace(
        request, id=f"{request.id}-answer", prompt=request.prompt + text,
        prompt_tokens=(None if request.prompt_tokens is None
                       else (*request.prompt_tokens, *await engine.tokenize(text))),
        sampling=replace(request.sampling, num_predict=budget - used if budget > 0 else budget))
    if opening:
        yield Piece(opening, Split())
    async for item in _plain(engine, second, None):
        yield _added(final, item) if isinstance(item, Final) and final is not None else item


async def _plain(engine: Engine, request: GenerateRequest,
                 thinker: ThinkingParser | None) -> AsyncIterator[Piece | Final]:
    final: Final | None = None
    async with aclosing(engine.generate(request)) as items:
        async for item in items:
            if isinstance(item, Final):
                final = item
                continue
            split = thinker.feed(item.text) if thinker else Split(content=item.text)
            yield Piece(item.text, split, item.logprobs)
    if thinker is not None:
        yield Piece("", thinker.finish())
    if final is not None:
        yield final


def _added(first: Final, second: Final) -> Final:
    """The second generation's Final, counting the first's tokens and time too."""
    return replace(second, id=first.id,
                   prompt_eval_count=first.prompt_eval_count + second.prompt_eval_count,
                   prompt_eval_duration=first.prompt_eval_duration + second.prompt_eval_duration,
                   eval_count=first.eval_count + second.eval_count,
                   eval_duration=first.eval_duration + second.eval_duration,
                   prompt_tokens_cached=first.prompt_tokens_cached, pauses=first.pauses + second.pauses)
