"""Reading an engine's answer in tests: the text of its chunks, then its Final."""

from __future__ import annotations

from corral.engine.process import Engine
from corral.engine.requests import Chunk, Final, GenerateRequest


async def collect(engine: Engine, req: GenerateRequest) -> tuple[str, Final]:
    """The whole text `engine` generates for `req`, and the Final that ends it (exactly one, last)."""
    text, final = "", None
    async for message in engine.generate(req):
        if isinstance(message, Chunk):
            assert final is None, "a chunk after the Final"
            text += message.text
        else:
            final = message
    assert final is not None
    return text, final
