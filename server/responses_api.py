"""The OpenAI Responses API: `POST /v1/responses`, translated to the chat generation.

As Ollama does, the API is stateless: the request becomes the same `ChatInput` that
/v1/chat/completions makes (instructions as a system message, input items as messages, function
tools as chat tools, `text.format` as the chat's structured output), and the generation comes
back as output items: a thinking model's reasoning as a `reasoning` item (its summary, as Ollama
sends it), the text as a `message` with one `output_text` part, one `function_call` item per call. `previous_response_id` and `conversation` are refused with a 400,
as Ollama refuses them: nothing is kept between requests, so the client sends the whole
conversation (`store` is accepted and changes nothing).

Streams are server-sent events with named events (`event: <type>` then `data: <json>`), each with
a `sequence_number` counting from 0.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from sanic import Request
from sanic.response import HTTPResponse, json as json_response

from corral.runtime.inference import Calls, ChatInput, Done, Event, TextEvent, ThinkingEvent
from corral.runtime.structured import response_format_to_format
from corral.runtime.tools import ToolCall
from corral.server.errors import BadRequestError, message_of, openai_type, status_of
from corral.server.openai_api import _EFFORT as EFFORT  # the chat endpoint's, so both read effort alike
from corral.server.responses_schemas import ResponsesBody
from corral.server.schemas import parse_body
from corral.server.translated import named_event, send_events, start_chat, whole

_TEXT_PARTS = ("input_text", "output_text", "text")


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# -- the request ---------------------------------------------------------------------------------

def _content(content: Any, where: str) -> tuple[str, list[str]]:
    """A message item's text and images (base64)."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise BadRequestError(f"{where}.content: expected a string or a list of content parts", param=where)
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS:
            texts.append(str(part.get("text") or ""))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise BadRequestError(f"{where}.content.{j}: input_image needs an image_url (a base64 data URL); "
                                      "file_id is not supported by this server", param=where)
            images.append(_image_data(url, f"{where}.content.{j}"))
        elif kind == "refusal":
            texts.append(str(part.get("refusal") or ""))
        else:
            raise BadRequestError(f"{where}.content.{j}: content of type {kind!r} is not supported by this server",
                                  param=where)
    return "\n".join(texts), images


def _image_data(url: str, where: str) -> str:
    """The base64 data of a data URL (remote image URLs are not fetched, as in chat)."""
    header, _, data = url.partition(",")
    if not url.startswith("data:") or not header.endswith(";base64") or not data:
        raise BadRequestError(f"{where}.image_url: only base64 data URLs are supported "
                              "(data:image/png;base64,...)", param=where)
    return data


def native_messages(body: ResponsesBody) -> list[dict[str, Any]]:
    """The request's instructions and input as native chat messages."""
    out: list[dict[str, Any]] = []
    if body.instructions:
        out.append({"role": "system", "content": body.instructions})
    if isinstance(body.input, str):
        return out + [{"role": "user", "content": body.input}]
    names_by_id: dict[str, str] = {}
    for i, item in enumerate(body.input):
        where = f"input.{i}"
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadRequestError(f"{where}.role: expected user, assistant, system or developer, got {role!r}",
                                      param=where)
            text, images = _content(item.get("content", ""), where)
            message: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": text}
            if images:
                message["images"] = images
            out.append(message)
        elif kind == "function_call":
            name, call_id = item.get("name"), item.get("call_id") or item.get("id")
            try:
                arguments = json.loads(item.get("arguments") or "{}")
            except (TypeError, json.JSONDecodeError):
                raise BadRequestError(f"{where}.arguments: invalid tool call arguments", param=where) from None
            if not isinstance(name, str):
                raise BadRequestError(f"{where}.name: a function_call needs the function's name", param=where)
            call = {"id": call_id, "function": {"name": name, "arguments": arguments}}
            names_by_id[str(call_id)] = name
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and (last.get("tool_calls") or not last["content"]):
                last.setdefault("tool_calls", []).append(call)  # calls of one turn go in one message
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = str(item.get("call_id") or "")
            output = item.get("output", "")
            if not isinstance(output, str):
                output, _ = _content(output, where)
            out.append({"role": "tool", "content": output, "tool_name": names_by_id.get(call_id, ""),
                        "tool_call_id": call_id})
        elif kind == "reasoning":
            continue  # earlier reasoning is not part of the prompt, as in chat history
        else:
            raise BadRequestError(f"{where}.type: input items of type {kind!r} are not supported by this server",
                                  param=where)
    return out


def chat_input(body: ResponsesBody) -> ChatInput:
    """The request as the chat endpoints' ChatInput."""
    for field in ("previous_response_id", "conversation"):
        if getattr(body, field):
            raise BadRequestError(f"{field} is not supported: this server keeps no responses, so send the "
                                  "whole conversation in input", param=field)
    options: dict[str, Any] = {"temperature": 1.0 if body.temperature is None else body.temperature,
                               "top_p": body.top_p or 1.0}
    if body.max_output_tokens is not None:
        options["num_predict"] = body.max_output_tokens
    tools = [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                               "parameters": t.parameters or {"type": "object", "properties": {}}}}
             for t in body.tools] if body.tools else None
    choice = body.tool_choice
    if isinstance(choice, dict):
        choice = {"type": "function", "function": {"name": choice["name"]}}
    fmt = body.text.format if body.text else None
    response_format = None
    if fmt is not None and fmt.type == "json_schema":
        response_format = {"type": "json_schema", "json_schema": {"schema": fmt.schema_}}
    elif fmt is not None:
        response_format = {"type": fmt.type}
    effort = body.reasoning.effort if body.reasoning else None
    return ChatInput(messages=native_messages(body), tools=tools, tool_choice=choice,
                     format=response_format_to_format(response_format), options=options,
                     think=EFFORT.get(effort or ""))


# -- the response --------------------------------------------------------------------------------

def _usage(done: Done) -> dict[str, Any]:
    prompt = done.prompt_eval_count + done.prompt_cached
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": done.prompt_cached},
            "output_tokens": done.eval_count, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + done.eval_count}


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status != "start" else []
    return {"type": "message", "id": item_id, "status": "in_progress" if status == "start" else status,
            "role": "assistant", "content": content}


def _reasoning(item_id: str, text: str | None) -> dict[str, Any]:
    """A reasoning item; the thinking is its summary, as Ollama sends it (None: just opened)."""
    summary = [] if text is None else [{"type": "summary_text", "text": text}]
    return {"type": "reasoning", "id": item_id, "summary": summary}


def _function_call(call: ToolCall, arguments: str, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": "fc_" + call.id.removeprefix("call_"), "call_id": call.id,
            "name": call.name, "arguments": arguments, "status": status}


class Reply:
    """The response object as it grows, from the request's echo to its output and usage."""

    def __init__(self, body: ResponsesBody):
        fmt = body.text.format.model_dump(by_alias=True, exclude_none=True) if body.text and body.text.format else None
        self.object: dict[str, Any] = {
            "id": _id("resp"), "object": "response", "created_at": int(time.time()), "status": "in_progress",
            "model": body.model, "output": [], "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens, "temperature": body.temperature, "top_p": body.top_p,
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or []],
            "tool_choice": body.tool_choice or "auto", "parallel_tool_calls": body.parallel_tool_calls is not False,
            "text": {"format": fmt or {"type": "text"}}, "previous_response_id": None,
            "store": bool(body.store), "metadata": body.metadata or {}, "error": None,
            "incomplete_details": None, "usage": None,
        }

    def snapshot(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.object))  # events carry the state at their moment

    def finish(self, done: Done) -> None:
        incomplete = done.done_reason == "length"
        self.object["status"] = "incomplete" if incomplete else "completed"
        self.object["incomplete_details"] = {"reason": "max_output_tokens"} if incomplete else None
        self.object["usage"] = _usage(done)


async def responses(request: Request) -> HTTPResponse | None:
    body = parse_body(request.body, ResponsesBody)
    events = start_chat(request, body.model, chat_input(body))
    reply = Reply(body)
    if not body.stream:
        answer = await whole(events)
        status = "incomplete" if answer.done.done_reason == "length" else "completed"
        if answer.thinking:
            reply.object["output"].append(_reasoning(_id("rs"), answer.thinking))
        if answer.text or not answer.calls:
            reply.object["output"].append(_message(_id("msg"), answer.text, status))
        reply.object["output"] += [_function_call(c, json.dumps(c.arguments, ensure_ascii=False), "completed")
                                   for c in answer.calls]
        reply.finish(answer.done)
        return json_response(reply.object)
    stream = ResponseEvents(reply)
    await send_events(request, events, stream.render, stream.error)
    return None


class ResponseEvents:
    """Renders the generation's events as the Responses API's stream."""

    def __init__(self, reply: Reply):
        self.reply = reply
        self.sequence = 0
        self.started = False
        self.text_item: str | None = None  # the id of the open message item
        self.text = ""
        self.reasoning_item: str | None = None  # the id of the open reasoning item
        self.thinking = ""

    def _event(self, kind: str, **data: Any) -> bytes:
        out = named_event(kind, {"type": kind, "sequence_number": self.sequence, **data})
        self.sequence += 1
        return out

    def _index(self) -> int:
        return len(self.reply.object["output"])

    def _open(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        return [self._event("response.created", response=self.reply.snapshot()),
                self._event("response.in_progress", response=self.reply.snapshot())]

    def _close_reasoning(self) -> list[bytes]:
        if self.reasoning_item is None:
            return []
        item_id, index = self.reasoning_item, self._index()
        part = {"type": "summary_text", "text": self.thinking}
        item = _reasoning(item_id, self.thinking)
        self.reply.object["output"].append(item)
        self.reasoning_item = None
        where = {"item_id": item_id, "output_index": index, "summary_index": 0}
        return [self._event("response.reasoning_summary_text.done", **where, text=self.thinking),
                self._event("response.reasoning_summary_part.done", **where, part=part),
                self._event("response.output_item.done", output_index=index, item=item)]

    def _think(self, text: str) -> list[bytes]:
        out = []
        if self.reasoning_item is None:
            self.reasoning_item, self.thinking = _id("rs"), ""
            index = self._index()
            where = {"item_id": self.reasoning_item, "output_index": index, "summary_index": 0}
            out += [self._event("response.output_item.added", output_index=index,
                                item=_reasoning(self.reasoning_item, None)),
                    self._event("response.reasoning_summary_part.added", **where,
                                part={"type": "summary_text", "text": ""})]
        self.thinking += text
        return out + [self._event("response.reasoning_summary_text.delta", item_id=self.reasoning_item,
                                  output_index=self._index(), summary_index=0, delta=text)]

    def _close_text(self, status: str) -> list[bytes]:
        out = self._close_reasoning()
        if self.text_item is None:
            return out
        item_id, index = self.text_item, self._index()
        part = {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
        item = _message(item_id, self.text, status)
        self.reply.object["output"].append(item)
        self.text_item = None
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        return out + [self._event("response.output_text.done", **where, text=self.text, logprobs=[]),
                      self._event("response.content_part.done", **where, part=part),
                      self._event("response.output_item.done", output_index=index, item=item)]

    def render(self, event: Event) -> list[bytes]:
        out = self._open()
        if isinstance(event, ThinkingEvent):
            out += self._think(event.text)
        elif isinstance(event, TextEvent):
            out += self._close_reasoning()
            if self.text_item is None:
                self.text_item = _id("msg")
                index = self._index()
                out += [self._event("response.output_item.added", output_index=index,
                                    item=_message(self.text_item, "", "start")),
                        self._event("response.content_part.added", item_id=self.text_item, output_index=index,
                                    content_index=0, part={"type": "output_text", "text": "", "annotations": [],
                                                           "logprobs": []})]
            self.text += event.text
            out.append(self._event("response.output_text.delta", item_id=self.text_item, output_index=self._index(),
                                   content_index=0, delta=event.text, logprobs=[]))
        elif isinstance(event, Done):
            out += self._close_text("incomplete" if event.done_reason == "length" else "completed")
            self.reply.finish(event)
            kind = "response.incomplete" if self.reply.object["status"] == "incomplete" else "response.completed"
            out.append(self._event(kind, response=self.reply.snapshot()))
        elif isinstance(event, Calls):
            out += self._close_text("completed")
            for call in event.calls:
                index = self._index()
                arguments = json.dumps(call.arguments, ensure_ascii=False)
                item = _function_call(call, arguments, "completed")
                out += [self._event("response.output_item.added", output_index=index,
                                    item=_function_call(call, "", "in_progress")),
                        self._event("response.function_call_arguments.delta", item_id=item["id"],
                                    output_index=index, delta=arguments),
                        self._event("response.function_call_arguments.done", item_id=item["id"],
                                    output_index=index, name=call.name, arguments=arguments),
                        self._event("response.output_item.done", output_index=index, item=item)]
                self.reply.object["output"].append(item)
        return out

    def error(self, exc: BaseException) -> bytes:
        """A failure after the stream began: an `error` event, then `response.failed`."""
        status = status_of(exc)
        error = {"code": openai_type(status), "message": message_of(exc)}
        self.reply.object.update(status="failed", error=error)
        return (self._event("error", code=error["code"], message=error["message"], param=None)
                + self._event("response.failed", response=self.reply.snapshot()))
