"""Fitting a prompt into the context window (Ollama's `truncate`), before it reaches the engine.

A chat whose prompt does not fit loses its oldest messages first: system messages and the last
user message (with what follows it) always stay, and the longest run of recent messages that fits
is kept, as Ollama's chatPrompt keeps it. When even that is too long (a few dozen tool definitions
can fill num_ctx by themselves), the prompt's tokens are cut as Ollama's runner cuts them: the
first `num_keep` and as much of the end as fits, with a warning in the log. Room is left for the
reply, since a prompt that fills the window would leave the model no token to answer with.
`truncate: false` refuses a prompt longer than the window instead, saying by how much.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Sequence

from corral.engine.errors import ContextOverflowError

log = logging.getLogger(__name__)

Tokenize = Callable[[str], Awaitable[list[int]]]


def reply_room(num_ctx: int, num_predict: int) -> int:
    """Tokens kept free for the answer: num_predict when it is set and small, else a quarter of
    the window (a prompt trimmed to the full window could not be answered at all)."""
    quarter = max(1, num_ctx // 4)
    return min(num_predict, quarter) if num_predict > 0 else quarter


def prompt_budget(num_ctx: int, num_predict: int) -> int:
    """The most tokens a prompt may have (its BOS included) when it has to be truncated."""
    return max(1, num_ctx - reply_room(num_ctx, num_predict))


def window(messages: Sequence[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    """The messages sent when the history starts at `start`: earlier system messages stay."""
    return [m for m in messages[:start] if m.get("role") == "system"] + list(messages[start:])


def latest_start(messages: Sequence[dict[str, Any]]) -> int:
    """The latest start a window may have: the last user message (or the last message)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return max(0, len(messages) - 1)


async def earliest_fit(messages: Sequence[dict[str, Any]], fits: Callable[[int], Awaitable[bool]]) -> int:
    """The earliest start whose window fits (a binary search: a later start is never longer);
    `latest_start` when none does. System messages are never dropped, so they are not counted
    as a start of their own."""
    low, high = 0, latest_start(messages)
    while low < high:
        mid = (low + high) // 2
        if await fits(mid):
            high = mid
        else:
            low = mid + 1
    return low


def trim_tokens(tokens: Sequence[int], budget: int, num_keep: int) -> list[int]:
    """The first `num_keep` tokens and the end, `budget` tokens in all (Ollama's runner's cut;
    num_keep -1 or past the budget keeps all but one of the budget at the front)."""
    if len(tokens) <= budget:
        return list(tokens)
    keep = budget - 1 if num_keep < 0 else min(num_keep, budget - 1)
    tail = budget - keep
    return list(tokens[:keep]) + list(tokens[len(tokens) - tail:])


def too_long(n_tokens: int, num_ctx: int) -> ContextOverflowError:
    return ContextOverflowError(
        f"the prompt is {n_tokens} tokens, {n_tokens - num_ctx} more than the context window of {num_ctx} "
        "tokens (num_ctx), and truncate is false",
        hint="leave truncate on to drop the oldest messages, shorten the prompt, or raise num_ctx")


def surely_fits(prompt: str, budget: int) -> bool:
    """True when the prompt cannot be over `budget` tokens without tokenizing it: every token but
    control tokens covers at least one byte, and control tokens cover more (one for the BOS)."""
    return len(prompt.encode()) + 1 <= budget


async def fit(prompt_at: Callable[[int], str], messages: Sequence[dict[str, Any]] | None, *, num_ctx: int,
              num_predict: int, num_keep: int, truncate: bool, tokenize: Tokenize) -> tuple[int, list[int] | None]:
    """Where the history starts (0: nothing dropped) and, when even that prompt is too long, its
    tokens cut to fit (else None: the prompt goes as text). `prompt_at(start)` renders the prompt
    with the history from `start` (in a thread: a template may render for up to its time cap);
    `messages` is that history (None for a generate prompt)."""
    budget = prompt_budget(num_ctx, num_predict)
    prompt = prompt_at(0)  # the plan's own prompt, already rendered
    if surely_fits(prompt, budget):
        return 0, None
    tokens = await tokenize(prompt)
    n = len(tokens) + 1  # the BOS the engine adds
    if n <= budget:
        return 0, None
    if not truncate:
        if n > num_ctx:
            raise too_long(n, num_ctx)
        return 0, None  # it fits the window; the answer has what is left
    start = 0
    if messages:
        async def fits(i: int) -> bool:
            return len(await tokenize(await asyncio.to_thread(prompt_at, i))) + 1 <= budget

        start = await earliest_fit(messages, fits)
        if start:
            log.info("dropped the %d oldest messages of %d so that the prompt fits num_ctx %d", start, len(messages),
                     num_ctx)
            tokens = await tokenize(await asyncio.to_thread(prompt_at, start))
            if len(tokens) + 1 <= budget:
                return start, None
    cut = trim_tokens(tokens, budget - 1, num_keep)
    log.warning("truncating the prompt from %d to %d tokens (num_ctx %d, keeping the first %d and the end)",
                len(tokens) + 1, len(cut) + 1, num_ctx, min(max(num_keep, 0), len(cut)))
    return start, cut
