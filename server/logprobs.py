"""Token log-probabilities in each API's shape, from the engine's `TokenLogprob`s.

Ollama's native API and OpenAI's chat completions send a list of entries (token, logprob, bytes
and the top alternatives); OpenAI's legacy completions send parallel lists (tokens,
token_logprobs, top_logprobs as token -> logprob maps, text_offset). The values are the model's
distribution before any sampling filter, so they mean the same whatever the temperature.
"""

from __future__ import annotations

from typing import Any, Iterable

from corral.engine.requests import TokenLogprob
from corral.runtime.inference import Event, TextEvent, ThinkingEvent


def entries_of(events: Iterable[Event], *, thinking: bool = True) -> list[TokenLogprob]:
    """The log-probabilities the events carry, in order (those of thinking text only if asked)."""
    kinds = (TextEvent, ThinkingEvent) if thinking else (TextEvent,)
    return [lp for e in events if isinstance(e, kinds) for lp in e.logprobs]


def native(entries: Iterable[TokenLogprob]) -> list[dict[str, Any]]:
    """Ollama's shape: top_logprobs is left out when none were asked for (Go's omitempty)."""
    out = []
    for e in entries:
        item: dict[str, Any] = {"token": e.token, "logprob": e.logprob, "bytes": list(e.bytes)}
        if e.top:
            item["top_logprobs"] = [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in e.top]
        out.append(item)
    return out


def chat(entries: Iterable[TokenLogprob]) -> dict[str, Any]:
    """A chat choice's `logprobs`: {"content": [...], "refusal": None}, top_logprobs always a list."""
    content = [{"token": e.token, "logprob": e.logprob, "bytes": list(e.bytes),
                "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in e.top]}
               for e in entries]
    return {"content": content, "refusal": None}


def legacy(entries: Iterable[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """A completion choice's `logprobs`; text offsets count characters from `offset` (where this
    part of the completion starts)."""
    tokens: list[str] = []
    values: list[float] = []
    tops: list[dict[str, float]] = []
    offsets: list[int] = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
        tokens.append(e.token)
        values.append(e.logprob)
        tops.append({t.token: t.logprob for t in e.top})
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}
