"""Fitting a prompt into num_ctx (corral.runtime.truncate): which messages stay, how tokens are cut,
and what truncate false says. A word is a token here, so each row's counts can be read off it."""

from __future__ import annotations

import asyncio

import pytest

from corral.engine.errors import ContextOverflowError
from corral.runtime import truncate


def sys(text: str) -> dict:
    return {"role": "system", "content": text}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


def tool(text: str) -> dict:
    return {"role": "tool", "content": text}


async def words(text: str) -> list[int]:
    return list(range(len(text.split())))


def render(messages: list[dict]) -> str:
    return " ".join(m["content"] for m in messages)


def fitted(messages: list[dict], num_ctx: int, num_predict: int = -1, num_keep: int = 4,
           truncate_on: bool = True) -> tuple[list[dict], list[int] | None]:
    start, tokens = asyncio.run(truncate.fit(lambda i: render(truncate.window(messages, i)), messages,
                                             num_ctx=num_ctx, num_predict=num_predict, num_keep=num_keep,
                                             truncate=truncate_on, tokenize=words))
    return truncate.window(messages, start), tokens


def w(n: int) -> str:
    return " ".join(["w"] * n)


W = w(10)


@pytest.mark.parametrize("messages, num_ctx, kept", [
    # everything fits (40 words + BOS within 3/4 of 64): nothing dropped
    ([sys("s"), user(W), bot(W), user(W)], 64, [sys("s"), user(W), bot(W), user(W)]),
    # the budget is 48 of 64 (a quarter kept for the reply): the oldest turn goes
    ([sys("s"), user(W), bot(W), user(W), bot(W), user(W)], 64, [sys("s"), bot(W), user(W), bot(W), user(W)]),
    # system messages among the dropped ones stay, in their places before the window
    ([user(W), sys("a"), bot(W), sys("b"), user(W), bot(W), user(W)], 48,
     [sys("a"), sys("b"), user(W), bot(W), user(W)]),
    # the last user message and what follows it (a tool round) are never dropped
    ([user(W), bot(W), user(W), bot(W), tool(W)], 40, [user(W), bot(W), tool(W)]),
    # when even the last user message does not fit, only it and the system messages remain
    ([sys("s"), user(W), bot(W), user(w(90))], 40, [sys("s"), user(w(90))]),
])
def test_the_oldest_messages_are_dropped_first(messages, num_ctx, kept):
    assert fitted(messages, num_ctx)[0] == kept


def test_reply_room_is_num_predict_when_small_else_a_quarter():
    assert [truncate.reply_room(2048, p) for p in (-1, -2, 0, 100, 600)] == [512, 512, 512, 100, 512]
    assert truncate.prompt_budget(2048, 100) == 1948


@pytest.mark.parametrize("n, budget, keep, expected", [
    (10, 10, 4, list(range(10))),
    (10, 6, 4, [0, 1, 2, 3, 8, 9]),
    (10, 6, 0, [4, 5, 6, 7, 8, 9]),
    (10, 6, -1, [0, 1, 2, 3, 4, 9]),  # keep everything: all but one of the budget at the front
    (10, 6, 9, [0, 1, 2, 3, 4, 9]),
])
def test_tokens_are_cut_keeping_num_keep_and_the_end(n, budget, keep, expected):
    assert truncate.trim_tokens(list(range(n)), budget, keep) == expected


def test_a_prompt_longer_than_the_window_after_dropping_is_cut_to_the_budget():
    messages = [sys(w(60)), user(W)]  # 60 words of system prompt (tool definitions, say)
    kept, tokens = fitted(messages, 64, num_keep=2)
    assert kept == messages
    assert tokens == [0, 1, *range(70 - 45, 70)]  # 47 tokens + the BOS = the budget of 48


def test_a_generate_prompt_is_cut_the_same_way():
    start, tokens = asyncio.run(truncate.fit(lambda i: w(80), None, num_ctx=64, num_predict=-1, num_keep=4,
                                             truncate=True, tokenize=words))
    assert start == 0 and tokens == [0, 1, 2, 3, *range(80 - 43, 80)]


def test_truncate_false_refuses_a_prompt_over_num_ctx_saying_by_how_much():
    with pytest.raises(ContextOverflowError) as caught:
        fitted([user(w(70))], 64, truncate_on=False)
    assert str(caught.value) == ("the prompt is 71 tokens, 7 more than the context window of 64 tokens (num_ctx), "
                                 "and truncate is false")


def test_truncate_false_sends_a_prompt_that_fits_the_window_whole():
    messages = [user(w(60))]  # 61 with the BOS: over the budget, within num_ctx
    assert fitted(messages, 64, truncate_on=False) == (messages, None)
