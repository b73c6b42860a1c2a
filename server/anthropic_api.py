"""The Anthropic Messages API: `POST /v1/messages`, translated to the chat generation.

The request becomes the same `ChatInput` the chat endpoints make: `system` as a system message,
text and image blocks as message content, `tool_use` blocks as the assistant's tool calls and
`tool_result` blocks as tool messages, `tools` as chat tools (`input_schema` is the parameters) and
`tool_choice` as OpenAI's ("any" is "required"), `output_config.format` as the chat's structured
output. Sampling is what the client sends and otherwise
the model's own; `max_tokens` (required, as Anthropic requires it) is `num_predict`.

The answer's thinking, text and tool calls come back as `thinking`, `text` and `tool_use` blocks
(a thinking block's `signature` is empty: nothing signs it). `stop_reason` is
"tool_use" when the model called a tool, "max_tokens" when it ran out, "stop_sequence" (with
`stop_sequence` naming it) when one of the request's stop_sequences ended the text, else
"end_turn" (the model's own stops, such as its end-of-turn marker, are an end of turn). Streams are Anthropic's named server-sent events: message_start, ping, then per
block content_block_start / content_block_delta / content_block_stop, message_delta (stop reason
and usage) and message_stop; an error after the first event is an `error` event.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from sanic import Request
from sanic.response import HTTPResponse, json as json_response

from corral.runtime import inference
from corral.runtime.inference import Calls, ChatInput, Done, Event, TextEvent, ThinkingEvent
from corral.runtime.tools import ToolCall
from corral.server.errors import BadRequestError, anthropic_body
from corral.server.anthropic_schemas import Block, CountTokensBody, MessagesBody, TextBlock
from corral.server.schemas import parse_body
from corral.server.translated import named_event, send_events, start_chat, whole


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# -- the request ---------------------------------------------------------------------------------

def _system(system: str | list[TextBlock] | None) -> str | None:
    if system is None or isinstance(system, str):
        return system or None
    return "\n".join(block.text for block in system) or None


def _result_text(block: Block, where: str) -> str:
    if block.content is None or isinstance(block.content, str):
        return block.content or ""
    texts = []
    for part in block.content:
        if part.get("type") != "text":
            raise BadRequestError(f"{where}.content: tool results of type {part.get('type')!r} are not supported "
                                  "by this server, only text", param=where)
        texts.append(str(part.get("text") or ""))
    return "\n".join(texts)


def _image(block: Block, where: str) -> str:
    source = block.source or {}
    if source.get("type") != "base64" or not isinstance(source.get("data"), str):
        raise BadRequestError(f"{where}.source: only base64 image sources are supported by this server",
                              param=where)
    return source["data"]


def native_messages(body: MessagesBody | CountTokensBody) -> list[dict[str, Any]]:
    """The request's system prompt and messages as native chat messages."""
    out: list[dict[str, Any]] = []
    system = _system(body.system)
    if system:
        out.append({"role": "system", "content": system})
    names_by_id: dict[str, str] = {}
    for i, message in enumerate(body.messages):
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
            continue
        texts: list[str] = []
        images: list[str] = []
        calls: list[dict[str, Any]] = []
        for j, block in enumerate(message.content):
            where = f"messages.{i}.content.{j}"
            if block.type == "text":
                texts.append(block.text or "")
            elif block.type == "image":
                images.append(_image(block, where))
            elif block.type == "tool_use":
                if not block.name:
                    raise BadRequestError(f"{where}.name: a tool_use block needs the tool's name", param=where)
                calls.append({"id": block.id, "function": {"name": block.name, "arguments": block.input or {}}})
                names_by_id[block.id or ""] = block.name
            elif block.type == "tool_result":
                # Results answer the calls of the turn before, so they come ahead of this turn's text.
                out.append({"role": "tool", "content": _result_text(block, where),
                            "tool_name": names_by_id.get(block.tool_use_id or "", ""),
                            "tool_call_id": block.tool_use_id or ""})
            elif block.type in ("thinking", "redacted_thinking"):
                continue  # earlier reasoning is not part of the prompt
            else:
                raise BadRequestError(f"{where}.type: content blocks of type {block.type!r} are not supported "
                                      "by this server", param=where)
        if texts or images or calls:
            native: dict[str, Any] = {"role": message.role, "content": "\n".join(texts)}
            if images:
                native["images"] = images
            if calls:
                native["tool_calls"] = calls
            out.append(native)
    return out


def _tools(body: MessagesBody | CountTokensBody) -> list[dict[str, Any]] | None:
    if not body.tools:
        return None
    return [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.input_schema}} for t in body.tools]


def chat_input(body: MessagesBody) -> ChatInput:
    """The request as the chat endpoints' ChatInput."""
    options: dict[str, Any] = {"num_predict": body.max_tokens}
    for key, value in (("temperature", body.temperature), ("top_p", body.top_p), ("top_k", body.top_k),
                       ("stop", body.stop_sequences)):
        if value is not None:
            options[key] = value
    choice: Any = None
    if body.tool_choice is not None:
        kind = body.tool_choice.type
        if kind == "tool":
            if not body.tool_choice.name:
                raise BadRequestError("tool_choice.name: a tool_choice of type tool needs the tool's name",
                                      param="tool_choice")
            choice = {"type": "function", "function": {"name": body.tool_choice.name}}
        else:
            choice = {"any": "required"}.get(kind, kind)
    think = None
    if body.thinking is not None:
        think = body.thinking.type != "disabled"
    fmt = body.output_config.format if body.output_config else None
    return ChatInput(messages=native_messages(body), tools=_tools(body), tool_choice=choice, options=options,
                     think=think, format=(fmt.schema_ or "json") if fmt else None)


# -- the response --------------------------------------------------------------------------------

def _stop_sequence(done: Done, asked: list[str] | None) -> str | None:
    """The request's stop sequence that ended the answer, if one did."""
    return done.stop_sequence if done.stop_sequence is not None and done.stop_sequence in (asked or ()) else None


def _stop_reason(done: Done, calls: bool, asked: list[str] | None = None) -> str:
    if calls:
        return "tool_use"
    if done.done_reason == "length":
        return "max_tokens"
    return "stop_sequence" if _stop_sequence(done, asked) is not None else "end_turn"


def _usage(done: Done) -> dict[str, int]:
    # Anthropic's input_tokens leaves out tokens read from the cache, which it counts apart.
    return {"input_tokens": done.prompt_eval_count, "cache_read_input_tokens": done.prompt_cached,
            "cache_creation_input_tokens": 0, "output_tokens": done.eval_count}


def _tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_" + call.id.removeprefix("call_"), "name": call.name,
            "input": call.arguments}


def _head(model: str) -> dict[str, Any]:
    return {"id": _id("msg"), "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None}


async def messages(request: Request) -> HTTPResponse | None:
    body = parse_body(request.body, MessagesBody)
    events = start_chat(request, body.model, chat_input(body))
    if not body.stream:
        answer = await whole(events)
        content: list[dict[str, Any]] = []
        if answer.thinking:
            content.append({"type": "thinking", "thinking": answer.thinking, "signature": ""})
        if answer.text:
            content.append({"type": "text", "text": answer.text})
        content += [_tool_use(c) for c in answer.calls]
        done = answer.done
        return json_response({**_head(body.model), "content": content,
                              "stop_reason": _stop_reason(done, bool(answer.calls), body.stop_sequences),
                              "stop_sequence": _stop_sequence(done, body.stop_sequences), "usage": _usage(done)})
    stream = MessageEvents(body.model, body.stop_sequences)
    await send_events(request, events, stream.render, lambda e: named_event("error", anthropic_body(e)))
    return None


class MessageEvents:
    """Renders the generation's events as Anthropic's stream."""

    def __init__(self, model: str, stop_sequences: list[str] | None = None):
        self.model = model
        self.stop_sequences = stop_sequences  # the request's: only these are reported as stop_sequence
        self.started = False
        self.index = 0  # the index of the next content block
        self.open: str | None = None  # the kind of the open block: "text" or "thinking"
        self.called = False

    def _block(self, kind: str, **data: Any) -> bytes:
        return named_event(kind, {"type": kind, "index": self.index, **data})

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        out = [self._block("content_block_stop")]
        self.index += 1
        return out

    def _delta(self, kind: str, text: str) -> list[bytes]:
        """A piece of a text or thinking block, opening the block first if another one is open."""
        out = []
        if self.open != kind:
            out += self._close()
            self.open = kind
            start = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "",
                                                                          "signature": ""}
            out.append(self._block("content_block_start", content_block=start))
        delta = {"type": "text_delta", "text": text} if kind == "text" else {"type": "thinking_delta",
                                                                              "thinking": text}
        return out + [self._block("content_block_delta", delta=delta)]

    def render(self, event: Event) -> list[bytes]:
        out: list[bytes] = []
        if not self.started:
            self.started = True
            message = {**_head(self.model), "usage": {"input_tokens": 0, "output_tokens": 0}}
            out += [named_event("message_start", {"type": "message_start", "message": message}),
                    named_event("ping", {"type": "ping"})]
        if isinstance(event, TextEvent):
            out += self._delta("text", event.text)
        elif isinstance(event, ThinkingEvent):
            out += self._delta("thinking", event.text)
        elif isinstance(event, Done):
            out += self._close()
            out += [named_event("message_delta", {
                        "type": "message_delta",
                        "delta": {"stop_reason": _stop_reason(event, self.called, self.stop_sequences),
                                  "stop_sequence": _stop_sequence(event, self.stop_sequences)},
                        "usage": _usage(event)}),
                    named_event("message_stop", {"type": "message_stop"})]
        elif isinstance(event, Calls):
            out += self._close()
            for call in event.calls:
                self.called = True
                block = {**_tool_use(call), "input": {}}
                arguments = json.dumps(call.arguments, ensure_ascii=False)
                out += [self._block("content_block_start", content_block=block),
                        self._block("content_block_delta",
                                    delta={"type": "input_json_delta", "partial_json": arguments}),
                        self._block("content_block_stop")]
                self.index += 1
        return out


async def count_tokens(request: Request) -> HTTPResponse:
    body = parse_body(request.body, CountTokensBody)
    ctx = request.app.ctx
    job = ChatInput(messages=native_messages(body), tools=_tools(body))
    count = await inference.count_tokens(ctx.scheduler, ctx.models, body.model,
                                         lambda spec: inference.plan_chat(spec, job))
    return json_response({"input_tokens": count})
