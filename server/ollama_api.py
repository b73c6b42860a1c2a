"""The native API under /api, as Ollama answers it: generate, chat and embeddings here, model
management in models_api.py (same blueprint).

Replies stream as NDJSON by default (`"stream": false` gives one JSON object holding the whole
text and the last chunk's statistics); durations are nanoseconds, `created_at` is RFC3339Nano
UTC. An empty prompt (or message list) only loads the model, or with `keep_alive: 0` unloads it.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, AsyncIterator, Callable

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json as json_response

from corral.runtime import inference
from corral.runtime.inference import Calls, ChatInput, Done, Event, GenerateInput, TextEvent, ThinkingEvent
from corral.runtime.tools import ToolCall
from corral.server import library_api, logprobs, models_api
from corral.server.errors import native_body, render_native
from corral.server.guard import count, metered
from corral.server.schemas import ChatBody, EmbedBody, EmbeddingsBody, GenerateBody, parse_body
from corral.server.streaming import NDJSON, LazyStream, ndjson_line, pump, rfc3339nano


def blueprint() -> Blueprint:
    """A fresh /api blueprint (one per app, so apps built in one process share nothing)."""
    bp = Blueprint("ollama_api", url_prefix="/api")
    bp.add_route(generate, "/generate", methods=["POST"])
    bp.add_route(chat, "/chat", methods=["POST"])
    bp.add_route(embed, "/embed", methods=["POST"])
    bp.add_route(embeddings, "/embeddings", methods=["POST"])
    models_api.register(bp)
    library_api.register(bp)
    bp.exception(Exception)(render_native)
    return bp


def native_call(call: ToolCall, index: int) -> dict[str, Any]:
    """A tool call as /api/chat sends it."""
    return {"id": call.id, "function": {"index": index, "name": call.name, "arguments": call.arguments}}


async def _reply(request: Request, stream: bool, events: AsyncIterator[Event],
                 chunk: Callable[[Event, int], dict[str, Any]], merge: Callable[[list[Event]], dict[str, Any]]
                 ) -> HTTPResponse | None:
    """Stream `events` as NDJSON chunks, or answer them merged into one object."""
    if not stream:
        async with aclosing(events) as it:  # closes the generation at once if the client leaves
            collected = [event async for event in it]
        return json_response(merge(collected))
    calls_sent = 0

    def render(event: Event) -> list[bytes]:
        nonlocal calls_sent
        line = ndjson_line(chunk(event, calls_sent))
        if isinstance(event, Calls):
            calls_sent += len(event.calls)
        return [line]

    await pump(LazyStream(request, NDJSON), events, render, lambda e: ndjson_line(native_body(e)))
    return None


def _stats(events: list[Event]) -> tuple[str, list[Any], Done]:
    text = "".join(e.text for e in events if isinstance(e, TextEvent))
    calls = [c for e in events if isinstance(e, Calls) for c in e.calls]
    done = next(e for e in events if isinstance(e, Done))
    return text, calls, done


def _thinking(events: list[Event]) -> dict[str, str]:
    """The `thinking` field of a merged reply: all of it, left out when there was none."""
    text = "".join(e.text for e in events if isinstance(e, ThinkingEvent))
    return {"thinking": text} if text else {}


def _logprobs(events: list[Event] | Event) -> dict[str, Any]:
    """The `logprobs` field of a chunk (or of a merged reply: all of them), left out when none."""
    entries = logprobs.entries_of(events if isinstance(events, list) else [events])
    return {"logprobs": logprobs.native(entries)} if entries else {}


def _context(done: Done) -> dict[str, Any]:
    """Generate's `context` (the prompt's and the reply's token ids), where Ollama sends it."""
    return {"context": done.context} if done.context is not None else {}


async def _rendered(request: Request, model: str, empty: dict[str, Any], planner: inference.Planner) -> HTTPResponse:
    """Ollama's answer to `_debug_render_only`: the prompt the model would get, in `_debug_info`."""
    prompt, images = await inference.render_only(request.app.ctx.models, model, planner)
    return json_response({"model": model, "created_at": rfc3339nano(), **empty, "done": False,
                          "_debug_info": {"rendered_template": prompt, "image_count": images}})


async def generate(request: Request) -> HTTPResponse | None:
    body = parse_body(request.body, GenerateBody)
    ctx = request.app.ctx
    if not body.prompt and not body.images and not body.suffix:
        reason = await inference.load_or_unload(ctx.scheduler, ctx.models, body.model, body.keep_alive)
        return json_response({"model": body.model, "created_at": rfc3339nano(), "response": "", "done": True,
                              "done_reason": reason})
    job = GenerateInput(prompt=body.prompt, system=body.system, template=body.template, raw=body.raw,
                        suffix=body.suffix, images=body.images, format=body.format, options=body.options,
                        think=body.think, truncate=body.truncate is not False, shift=body.shift is not False,
                        context=body.context, logprobs=body.logprobs, top_logprobs=body.top_logprobs)
    if body.debug_render_only:
        return await _rendered(request, body.model, {"response": ""}, lambda spec: inference.plan_generate(spec, job))
    events = metered(request, inference.run(ctx.scheduler, ctx.models, body.model, body.keep_alive,
                                            lambda spec: inference.plan_generate(spec, job)))

    def chunk(event: Event, _calls_sent: int) -> dict[str, Any]:
        out: dict[str, Any] = {"model": body.model, "created_at": rfc3339nano(),
                               "response": event.text if isinstance(event, TextEvent) else ""}
        if isinstance(event, ThinkingEvent):
            out["thinking"] = event.text
        if isinstance(event, Done):
            return {**out, "done": True, "done_reason": event.done_reason, **_context(event), **event.stats()}
        return {**out, "done": False, **_logprobs(event)}

    def merge(events: list[Event]) -> dict[str, Any]:
        text, _calls, done = _stats(events)
        return {"model": body.model, "created_at": rfc3339nano(), "response": text, **_thinking(events),
                "done": True, "done_reason": done.done_reason, **_context(done), **done.stats(),
                **_logprobs(events)}

    return await _reply(request, body.stream, events, chunk, merge)


async def chat(request: Request) -> HTTPResponse | None:
    body = parse_body(request.body, ChatBody)
    ctx = request.app.ctx
    if not body.messages:
        reason = await inference.load_or_unload(ctx.scheduler, ctx.models, body.model, body.keep_alive)
        return json_response({"model": body.model, "created_at": rfc3339nano(),
                              "message": {"role": "assistant", "content": ""}, "done": True,
                              "done_reason": reason})
    job = ChatInput(messages=[m.model_dump(exclude_none=True) for m in body.messages],
                    tools=[t.model_dump() for t in body.tools] if body.tools else None,
                    format=body.format, options=body.options, think=body.think,
                    truncate=body.truncate is not False, shift=body.shift is not False,
                    logprobs=body.logprobs, top_logprobs=body.top_logprobs)
    if body.debug_render_only:
        return await _rendered(request, body.model, {"message": {"role": "", "content": ""}},
                               lambda spec: inference.plan_chat(spec, job))
    events = metered(request, inference.run(ctx.scheduler, ctx.models, body.model, body.keep_alive,
                                            lambda spec: inference.plan_chat(spec, job)))

    def chunk(event: Event, calls_sent: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": event.text if isinstance(event, TextEvent) else ""}
        if isinstance(event, ThinkingEvent):
            message["thinking"] = event.text
        if isinstance(event, Calls):
            message["tool_calls"] = [native_call(c, calls_sent + i) for i, c in enumerate(event.calls)]
        out = {"model": body.model, "created_at": rfc3339nano(), "message": message}
        if isinstance(event, Done):
            return {**out, "done": True, "done_reason": event.done_reason, **event.stats()}
        return {**out, "done": False, **_logprobs(event)}

    def merge(events: list[Event]) -> dict[str, Any]:
        text, calls, done = _stats(events)
        message: dict[str, Any] = {"role": "assistant", "content": text, **_thinking(events)}
        if calls:
            message["tool_calls"] = [native_call(c, i) for i, c in enumerate(calls)]
        return {"model": body.model, "created_at": rfc3339nano(), "message": message, "done": True,
                "done_reason": done.done_reason, **done.stats(), **_logprobs(events)}

    return await _reply(request, body.stream, events, chunk, merge)


async def embed(request: Request) -> HTTPResponse:
    body = parse_body(request.body, EmbedBody)
    ctx = request.app.ctx
    result = await inference.embed(ctx.scheduler, ctx.models, body.model, body.input, truncate=body.truncate,
                                   normalize=True, keep_alive=body.keep_alive, options=body.options)
    count(request, result.prompt_eval_count)
    out: dict[str, Any] = {"model": body.model,
                           "embeddings": [inference.shorten(v, body.dimensions) for v in result.vectors]}
    for key in ("total_duration", "load_duration", "prompt_eval_count"):
        if getattr(result, key):
            out[key] = getattr(result, key)
    return json_response(out)


async def embeddings(request: Request) -> HTTPResponse:
    body = parse_body(request.body, EmbeddingsBody)
    ctx = request.app.ctx
    inputs = [body.prompt] if body.prompt else []
    result = await inference.embed(ctx.scheduler, ctx.models, body.model, inputs, truncate=True,
                                   normalize=False, keep_alive=body.keep_alive, options=body.options)
    count(request, result.prompt_eval_count)
    return json_response({"embedding": result.vectors[0] if result.vectors else []})
