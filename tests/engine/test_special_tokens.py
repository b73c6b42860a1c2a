"""Control tokens in the output, on the real SmolLM2: dropped from the text by default, as
llama.cpp's detokenizer drops them, and kept as their text when a request asks (gpt-oss's
harmony headers are control tokens, and its parser reads them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.engine.process import Engine
from corral.engine.requests import GenerateRequest, Sampling
from tests.engine.streams import collect
from tests.specs import runtime_spec

pytestmark = pytest.mark.model

# A user's turn with no assistant header after it: at temperature 0 SmolLM2 opens the assistant's
# turn itself, with <|im_start|>, a control token, then "assistant".
TURN = ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n")


async def texts(weights: Path) -> tuple[str, str]:
    engine = Engine(runtime_spec(weights, name="tiny-special", num_ctx=256, num_parallel=1), n_slots=2)
    await engine.start()
    try:
        plain, _ = await collect(engine, GenerateRequest("plain", TURN, Sampling(temperature=0.0, num_predict=3)))
        shown, _ = await collect(engine, GenerateRequest("shown", TURN, Sampling(temperature=0.0, num_predict=3),
                                                         render_special=True))
        return plain, shown
    finally:
        await engine.close()


def test_control_tokens_come_out_only_when_asked(smollm2_gguf: Path) -> None:
    plain, shown = asyncio.run(texts(smollm2_gguf))
    assert (plain, shown) == ("assistant", "<|im_start|>assistant")
