"""The OpenAI-compatible API under /v1: chat completions, completions, embeddings, models.

Requests are translated to the same generation the native API runs (inference.py), following
Ollama's translation: `temperature` and `top_p` default to 1.0 when absent, `max_tokens` is
`num_predict`, `response_format` becomes a grammar. Unlike Ollama, `tool_choice` is honoured:
"none" hides the tools, "required" or a named function holds the answer to a call by grammar.

Streams are server-sent events: `data: {json}` chunks, a finish chunk with an empty delta, a
usage chunk when `stream_options.include_usage` is set, then `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import struct
import time
from contextlib import aclosing
from dataclasses import replace
from typing import Any, AsyncIterator

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json as json_response

from corral.runtime import inference
from corral.runtime.inference import Calls, ChatInput, Done, Event, GenerateInput, TextEvent, ThinkingEvent
from corral.runtime.structured import response_format_to_format
from corral.runtime.tools import ToolCall
from corral.server import logprobs as lp
from corral.server.errors import BadRequestError, openai_body, render_v1
from corral.server.guard import count, metered, visible
from corral.server.openai_schemas import ChatCompletionBody, ChatMessage, CompletionBody, EmbeddingBody
from corral.server.schemas import parse_body
from corral.server.streaming import EVENT_STREAM, SSE_DONE, LazyStream, pump, sse_event

FINGERPRINT = "fp_corral"
_EFFORT = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
           "max": "max", "xhigh": "max", "ultra": "max"}


def blueprint() -> Blueprint:
    """A fresh /v1 blueprint: OpenAI's endpoints, the Responses API and Anthropic's Messages API."""
    from corral.server import anthropic_api, responses_api  # they build on this module's helpers

    bp = Blueprint("openai_api", url_prefix="/v1")
    bp.add_route(chat_completions, "/chat/completions", methods=["POST"])
    bp.add_route(completions, "/completions", methods=["POST"])
    bp.add_route(embeddings, "/embeddings", methods=["POST"])
    bp.add_route(list_models, "/models", methods=["GET"])
    bp.add_route(retrieve_model, "/models/<model:path>", methods=["GET"])
    bp.add_route(responses_api.responses, "/responses", methods=["POST"])
    bp.add_route(anthropic_api.messages, "/messages", methods=["POST"])
    bp.add_route(anthropic_api.count_tokens, "/messages/count_tokens", methods=["POST"])
    bp.exception(Exception)(render_v1)  # Anthropic's error shape under /v1/messages
    return bp


def _options(body: Any) -> dict[str, Any]:
    """Ollama options from OpenAI sampling fields (temperature and top_p default to 1.0)."""
    options: dict[str, Any] = {"temperature": 1.0 if body.temperature is None else body.temperature,
                               "top_p": body.top_p or 1.0}
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
    for key, value in (("num_predict", max_tokens), ("seed", body.seed), ("stop", body.stop),
                       ("frequency_penalty", body.frequency_penalty),
                       ("presence_penalty", body.presence_penalty)):
        if value is not None:
            options[key] = tuple(value) if key == "stop" else value
    return options


def native_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """OpenAI messages as native ones: parts joined, tool arguments decoded, tool names found."""
    out: list[dict[str, Any]] = []
    names_by_id: dict[str, str] = {}
    for m in messages:
        native: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": ""}
        if m.reasoning:
            native["thinking"] = m.reasoning
        if isinstance(m.content, str):
            native["content"] = m.content
        elif m.content:
            texts, images = [], []
            for part in m.content:
                if part.type == "text":
                    texts.append(part.text or "")
                elif part.type == "image_url" and part.image_url is not None:
                    images.append(_image_data(part.image_url.url))
                else:
                    raise BadRequestError(f"{part.type} content is not supported by this server",
                                          param="messages")
            native["content"] = "\n".join(texts)
            if images:
                native["images"] = images
        if m.tool_calls:
            calls = []
            for call in m.tool_calls:
                try:
                    arguments = json.loads(call.function.arguments or "{}")
                except json.JSONDecodeError:
                    raise BadRequestError("invalid tool call arguments", param="messages") from None
                calls.append({"id": call.id, "function": {"name": call.function.name, "arguments": arguments}})
                if call.id:
                    names_by_id[call.id] = call.function.name
            native["tool_calls"] = calls
        if m.role == "tool":
            native["tool_name"] = m.name or names_by_id.get(m.tool_call_id or "", "")
            if m.tool_call_id:
                native["tool_call_id"] = m.tool_call_id
        out.append(native)
    return out


def _image_data(url: str) -> str:
    if not url.startswith("data:"):
        raise BadRequestError("image URLs are not currently supported, please use base64 encoded data instead",
                              param="messages")
    header, _, data = url.partition(",")
    if not header.endswith(";base64") or not data:
        raise BadRequestError("invalid image input", param="messages")
    return data


def _effort(body: ChatCompletionBody) -> str | None:
    """The reasoning effort asked for: `reasoning.effort` wins over `reasoning_effort`, as in Ollama."""
    if body.reasoning is not None and body.reasoning.effort is not None:
        return body.reasoning.effort
    return body.reasoning_effort


def openai_call(call: ToolCall, index: int) -> dict[str, Any]:
    return {"id": call.id, "index": index, "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}


def usage(done: Done) -> dict[str, int]:
    """OpenAI counts every prompt token, cached or not (Ollama's prompt_eval_count only the evaluated)."""
    prompt = done.prompt_eval_count + done.prompt_cached
    return {"prompt_tokens": prompt, "completion_tokens": done.eval_count, "total_tokens": prompt + done.eval_count}


async def _sse(request: Request, events: AsyncIterator[Event], render) -> None:
    await pump(LazyStream(request, EVENT_STREAM, {"Cache-Control": "no-cache"}), events, render,
               lambda e: sse_event(openai_body(e)) + SSE_DONE)


async def _collect(events: AsyncIterator[Event], thinking: list[str] | None = None,
                   logprobs: list[Any] | None = None) -> tuple[str, list[Any], Done]:
    """The text, calls and end of a generation; its thinking is appended to `thinking` and the
    answer's log-probabilities to `logprobs`, if given."""
    async with aclosing(events) as it:  # closes the generation at once if the client leaves
        collected = [event async for event in it]
    if thinking is not None:
        thinking.extend(e.text for e in collected if isinstance(e, ThinkingEvent))
    if logprobs is not None:
        logprobs.extend(lp.entries_of(collected, thinking=False))
    text = "".join(e.text for e in collected if isinstance(e, TextEvent))
    calls = [c for e in collected if isinstance(e, Calls) for c in e.calls]
    return text, calls, next(e for e in collected if isinstance(e, Done))


async def chat_completions(request: Request) -> HTTPResponse | None:
    body = parse_body(request.body, ChatCompletionBody)
    ctx = request.app.ctx
    response_format = body.response_format.model_dump(by_alias=True) if body.response_format else None
    job = ChatInput(messages=native_messages(body.messages),
                    tools=[t.model_dump() for t in body.tools] if body.tools else None,
                    tool_choice=body.tool_choice, format=response_format_to_format(response_format),
                    options=_options(body), think=_EFFORT.get(_effort(body) or ""),
                    logprobs=bool(body.logprobs), top_logprobs=(body.top_logprobs or 0) if body.logprobs else 0)
    events = metered(request, inference.run(ctx.scheduler, ctx.models, body.model, None,
                                            lambda spec: inference.plan_chat(spec, job)))
    head = {"id": f"chatcmpl-{random.randint(0, 998)}", "created": int(time.time()), "model": body.model,
            "system_fingerprint": FINGERPRINT}
    if not body.stream:
        thinking: list[str] = []
        entries: list[Any] = []
        text, calls, done = await _collect(events, thinking, entries)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["reasoning"] = "".join(thinking)
        if calls:
            message["tool_calls"] = [openai_call(c, i) for i, c in enumerate(calls)]
        finish = "tool_calls" if calls else done.done_reason
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
        if body.logprobs:
            choice["logprobs"] = lp.chat(entries)
        return json_response({**head, "object": "chat.completion", "choices": [choice], "usage": usage(done)})
    state = {"role_sent": False, "calls": 0}
    chunk_head = {**head, "object": "chat.completion.chunk"}

    def render(event: Event) -> list[bytes]:
        if isinstance(event, Done):
            finish = "tool_calls" if state["calls"] else event.done_reason
            out = [sse_event({**chunk_head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})]
            if body.include_usage:
                out.append(sse_event({**chunk_head, "choices": [], "usage": usage(event)}))
            return out + [SSE_DONE]
        delta: dict[str, Any] = {} if state["role_sent"] else {"role": "assistant"}
        state["role_sent"] = True
        if isinstance(event, TextEvent):
            delta["content"] = event.text
        elif isinstance(event, ThinkingEvent):
            delta["reasoning"] = event.text
        else:
            delta["tool_calls"] = [openai_call(c, state["calls"] + i) for i, c in enumerate(event.calls)]
            state["calls"] += len(event.calls)
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
        if body.logprobs and isinstance(event, TextEvent):
            choice["logprobs"] = lp.chat(event.logprobs)
        return [sse_event({**chunk_head, "choices": [choice]})]

    await _sse(request, events, render)
    return None


async def completions(request: Request) -> HTTPResponse | None:
    body = parse_body(request.body, CompletionBody)
    ctx = request.app.ctx
    job = GenerateInput(prompt=body.prompt, suffix=body.suffix or "", options=_options(body),
                        logprobs=body.logprobs is not None, top_logprobs=body.logprobs or 0)
    events = metered(request, inference.run(ctx.scheduler, ctx.models, body.model, None,
                                            lambda spec: replace(inference.plan_generate(spec, job),
                                                                 want_context=False)))
    head = {"id": f"cmpl-{random.randint(0, 998)}", "object": "text_completion", "created": int(time.time()),
            "model": body.model, "system_fingerprint": FINGERPRINT}
    if not body.stream:
        entries: list[Any] = []
        text, _calls, done = await _collect(events, logprobs=entries)
        choice: dict[str, Any] = {"text": text, "index": 0, "finish_reason": done.done_reason}
        if body.logprobs is not None:
            choice["logprobs"] = lp.legacy(entries)
        return json_response({**head, "choices": [choice], "usage": usage(done)})
    offset = 0  # characters of the completion streamed so far (the text_offset of the next token)

    def render(event: Event) -> list[bytes]:
        nonlocal offset
        if isinstance(event, Done):
            out = [sse_event({**head, "choices": [{"text": "", "index": 0, "finish_reason": event.done_reason}]})]
            if body.include_usage:
                out.append(sse_event({**head, "choices": [], "usage": usage(event)}))
            return out + [SSE_DONE]
        if isinstance(event, ThinkingEvent):
            return []  # a completion carries only the answer
        text = event.text if isinstance(event, TextEvent) else ""
        choice: dict[str, Any] = {"text": text, "index": 0, "finish_reason": None}
        if body.logprobs is not None and isinstance(event, TextEvent):
            choice["logprobs"] = lp.legacy(event.logprobs, offset)
            offset += sum(len(e.token) for e in event.logprobs)
        return [sse_event({**head, "choices": [choice]})]

    await _sse(request, events, render)
    return None


async def embeddings(request: Request) -> HTTPResponse:
    body = parse_body(request.body, EmbeddingBody)
    ctx = request.app.ctx
    result = await inference.embed(ctx.scheduler, ctx.models, body.model, body.input, truncate=True,
                                   normalize=True, keep_alive=None)
    count(request, result.prompt_eval_count)
    data = []
    for i, vector in enumerate(result.vectors):
        vector = inference.shorten(vector, body.dimensions)
        encoded: Any = vector
        if body.encoding_format == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "embedding": encoded, "index": i})
    return json_response({"object": "list", "data": data, "model": body.model,
                          "usage": {"prompt_tokens": result.prompt_eval_count,
                                    "total_tokens": result.prompt_eval_count}})


def _model_object(model_id: str, modified_at: Any) -> dict[str, Any]:
    from corral.store.names import parse_bare

    owner = parse_bare(model_id).namespace or "library"
    return {"id": model_id, "object": "model", "created": int(modified_at.timestamp()), "owned_by": owner}


async def list_models(request: Request) -> HTTPResponse:
    listings = await asyncio.to_thread(request.app.ctx.models.list)
    listings = sorted(listings, key=lambda m: m.modified_at, reverse=True)
    return json_response({"object": "list", "data": [_model_object(m.name, m.modified_at) for m in listings
                                                 if visible(request, m.name)]})


async def retrieve_model(request: Request, model: str) -> HTTPResponse:
    info = await asyncio.to_thread(request.app.ctx.models.show, model)
    return json_response(_model_object(model, info.modified_at))
