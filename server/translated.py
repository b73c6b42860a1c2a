"""The chat generation behind the APIs translated to it (Responses, Anthropic Messages): starting it,
taking its whole answer, and streaming it as named server-sent events.

Each API turns its request into a `ChatInput` and its answer into its own shapes; what happens in
between is the same for both, so it is written once here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from sanic import Request

from corral.runtime import inference
from corral.runtime.inference import ChatInput, Done, Event
from corral.runtime.tools import ToolCall
from corral.server.guard import metered
from corral.server.openai_api import _collect as collect  # the chat endpoint's, so all collect alike
from corral.server.streaming import EVENT_STREAM, LazyStream, dumps, pump


@dataclass(frozen=True)
class Answer:
    """A finished generation: its text, its thinking, its tool calls and its end."""

    text: str
    thinking: str
    calls: list[ToolCall]
    done: Done


def start_chat(request: Request, model: str, job: ChatInput) -> AsyncIterator[Event]:
    """The chat generation of `job` on `model`, planned once the model's spec is known, its tokens
    counted against the request's key; nothing runs until it is iterated."""
    ctx = request.app.ctx
    return metered(request, inference.run(ctx.scheduler, ctx.models, model, None,
                                          lambda spec: inference.plan_chat(spec, job)))


async def whole(events: AsyncIterator[Event]) -> Answer:
    """The generation run to its end, for a reply that is not streamed."""
    thinking: list[str] = []
    text, calls, done = await collect(events, thinking)
    return Answer(text, "".join(thinking), calls, done)


def named_event(kind: str, data: dict[str, Any]) -> bytes:
    """One server-sent event with its type named on an `event:` line."""
    return f"event: {kind}\ndata: {dumps(data)}\n\n".encode()


async def send_events(request: Request, events: AsyncIterator[Event], render: Callable[[Event], list[bytes]],
                      render_error: Callable[[BaseException], bytes]) -> None:
    """Stream the generation as server-sent events; an error after the first is sent as `render_error`'s."""
    await pump(LazyStream(request, EVENT_STREAM, {"Cache-Control": "no-cache"}), events, render, render_error)
