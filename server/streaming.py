"""Framing for streamed replies (NDJSON, server-sent events) and Go-style timestamps.

Both APIs stream the same way: the HTTP status is chosen only when the first piece is ready, so an
error raised before it (unknown model, queue full, bad template) still gets its real status and
JSON body. An error after it can only be reported in the stream: a last `{"error": ...}` line
(native) or `data: {"error": {...}}` event (OpenAI), as Ollama does.

When the client goes away, Sanic cancels the handler task; `pump` lets that CancelledError pass
through the `aclosing` block, which closes the event generator and so the engine's iterator and
the scheduler lease at once.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import aclosing
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Awaitable, Callable

from sanic import Request
from sanic.response import HTTPResponse, ResponseStream

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"
SSE_DONE = b"data: [DONE]\n\n"


def dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 left as is (Go's encoder escapes less, but clients accept both)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def ndjson_line(obj: Any) -> bytes:
    return (dumps(obj) + "\n").encode()


def sse_event(obj: Any) -> bytes:
    return ("data: " + dumps(obj) + "\n\n").encode()


def rfc3339nano(moment: datetime | int | None = None) -> str:
    """Go's RFC3339Nano: `2023-08-04T19:22:45.499127Z`, trailing zeros of the fraction dropped.

    `moment` is a datetime (its own offset is kept, UTC written as `Z`), an integer of
    nanoseconds since the epoch, or None for now.
    """
    if moment is None:
        moment = time.time_ns()
    if isinstance(moment, int):
        seconds, nanos = divmod(moment, 1_000_000_000)
        moment = datetime.fromtimestamp(seconds, timezone.utc)
    else:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        nanos = moment.microsecond * 1000
        moment = moment.replace(microsecond=0)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    if fraction:
        text += "." + fraction
    offset = moment.utcoffset()
    if not offset:
        return text + "Z"
    zone = moment.strftime("%z")
    return f"{text}{zone[:3]}:{zone[3:]}"


class LazyStream:
    """A streamed response whose headers go out with the first piece of body."""

    def __init__(self, request: Request, content_type: str, headers: dict[str, str] | None = None):
        self.request = request
        self.content_type = content_type
        self.headers = headers or {}
        self.response: HTTPResponse | ResponseStream | None = None

    @property
    def started(self) -> bool:
        return self.response is not None

    async def send(self, data: bytes) -> None:
        if self.response is None:
            self.response = await self.request.respond(content_type=self.content_type, headers=self.headers)
        await self.response.send(data)

    async def eof(self) -> None:
        if self.response is None:  # nothing was sent: still answer, with an empty body
            self.response = await self.request.respond(content_type=self.content_type, headers=self.headers)
        await self.response.eof()


async def pump(
    stream: LazyStream,
    events: AsyncIterator[Any],
    render: Callable[[Any], list[bytes]],
    render_error: Callable[[BaseException], bytes],
    after: Callable[[], Awaitable[list[bytes]]] | None = None,
) -> None:
    """Send each event as rendered; report a failure inside the stream once it has started.

    Errors before the first byte propagate to the API's error handler (real status code).
    """
    try:
        async with aclosing(events) as it:
            async for event in it:
                for piece in render(event):
                    await stream.send(piece)
        if after is not None:
            for piece in await after():
                await stream.send(piece)
    except Exception as e:
        if not stream.started:
            raise
        log.warning("stream to %s ended by an error: %s", stream.request.path, e, exc_info=e)
        await stream.send(render_error(e))
    await stream.eof()
