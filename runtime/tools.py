"""Tool calling: tools into the prompt, and tool calls out of the model's text.

Into the prompt: a template that knows tools (its source mentions `tools` or `.Tools`) gets them
through its own `tools` variable. A template that does not gets a system instruction describing
them instead, and the generation is held by a grammar to either a normal answer or one
well-formed call (`structured.tool_call_grammar`), which keeps even a 135M model's calls parseable.
History written for tool-aware templates (assistant `tool_calls`, `tool` results) is rewritten as
plain text for such templates.

Out of the text, `extract_tool_calls` recognises, in this order:

* `<tool_call>{...}</tool_call>` blocks (Hermes, Qwen), any number, text around them kept;
* the whole answer as one JSON call or a JSON array of calls, optionally after `<|python_tag|>`
  or `[TOOL_CALLS]`, or inside a ```json fence;

where a call is `{"name": ..., "arguments" | "parameters": {...}}` (arguments may be a JSON
string) or OpenAI's `{"function": {"name", "arguments"}}`, and its name is one of the tools given.
Anything else stays text. `ToolStream` does the same on a stream, passing text through as soon as
it cannot be the start of a call.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

_ID_CHARS = string.ascii_lowercase + string.digits
_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_PREFIXES = ("<|python_tag|>", "[TOOL_CALLS]")
_TAG = "<tool_call>"
# How an answer that is a call may begin; until the text rules these out, it is held back.
_OPENERS = (_TAG, "{", "[", "```", *_PREFIXES)

INSTRUCTION = (
    "You can call these tools:\n{tools}\n\n"
    "To call a tool, answer with only a JSON object of the form "
    '{{"name": "<tool name>", "arguments": {{<arguments>}}}} and nothing else. '
    "If no tool is needed, answer normally."
)


def call_id() -> str:
    """An id like Ollama's: `call_` and 8 random lowercase letters and digits."""
    return "call_" + "".join(secrets.choice(_ID_CHARS) for _ in range(8))


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=call_id)


def template_has_tools(template_source: str, template_jinja: str) -> bool:
    """Whether a chat template renders tools itself (Ollama's capability test)."""
    return ".Tools" in template_source or "tools" in template_jinja


def functions(tools: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The `function` objects of OpenAI/Ollama-shaped tools."""
    return [dict(t.get("function") or t) for t in tools]


def instruction(tools: Iterable[Mapping[str, Any]]) -> str:
    """The system text that describes tools to a model whose template cannot."""
    lines = "\n".join(json.dumps({"name": f["name"], "description": f.get("description", ""),
                                  "parameters": f.get("parameters", {})}, ensure_ascii=False)
                      for f in functions(tools))
    return INSTRUCTION.format(tools=lines)


def messages_without_tools(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                           system: str | None) -> list[dict[str, Any]]:
    """Messages for a template without tool support: tools described in the system message,
    earlier calls and results written as text. `system` is the model's own system prompt."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [{"name": c["function"]["name"], "arguments": c["function"].get("arguments", {})}
                     for c in m["tool_calls"]]
            text = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
            out.append({"role": "assistant", "content": (m.get("content") or "") + text})
        elif m.get("role") == "tool":
            name = m.get("tool_name") or "the tool"
            out.append({"role": "user", "content": f"Result of {name}: {m.get('content', '')}"})
        else:
            out.append({k: v for k, v in m.items() if k in ("role", "content", "images")})
    if tools:
        first_system = out[0]["content"] if out and out[0]["role"] == "system" else None
        base = first_system if first_system is not None else (system or "")
        text = (base + "\n\n" if base else "") + instruction(tools)
        out = [{"role": "system", "content": text}] + (out[1:] if first_system is not None else out)
    return out


def _as_call(obj: Any, names: set[str] | None) -> ToolCall | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict) and "name" not in obj:
        obj = obj["function"]
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters"))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None
    if args is None and set(obj) == {"name"}:
        args = {}
    if not isinstance(name, str) or not isinstance(args, dict):
        return None
    if names is not None and name not in names:
        return None
    return ToolCall(name, args)


def _calls_in(text: str, names: set[str] | None) -> list[ToolCall] | None:
    """The calls a JSON text holds, or None when it is not (only) calls."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_as_call(item, names) for item in items]
    if not calls or any(c is None for c in calls):
        return None
    return calls  # type: ignore[return-value]


def extract_tool_calls(text: str, names: Iterable[str] | None = None) -> tuple[str, list[ToolCall]]:
    """Split a finished answer into its text and its tool calls."""
    known = set(names) if names is not None else None
    if _TAG in text:
        calls: list[ToolCall] = []
        for body in _BLOCK.findall(text):
            found = _calls_in(body, known)
            if found is None:
                return text, []
            calls += found
        return _BLOCK.sub("", text).strip(), calls
    stripped = text.strip()
    for prefix in _PREFIXES:
        stripped = stripped.removeprefix(prefix)
    calls_only = _calls_in(stripped, known)
    if calls_only:
        return "", calls_only
    return text, []


class ToolStream:
    """Streaming extraction: `feed` each piece of text, then `finish`.

    Text that cannot begin a call is passed on at once; an answer that may be a call is held
    until the end and parsed whole (calls are sent as complete objects, as Ollama sends them).
    """

    def __init__(self, names: Iterable[str] | None = None):
        self.names = list(names) if names is not None else None
        self._buffer = ""
        self._mode = "start"  # "start": undecided; "text": passing through; "call": holding

    def feed(self, text: str) -> str:
        """The text that can be shown now."""
        self._buffer += text
        if self._mode == "start":
            head = self._buffer.lstrip()
            if not head:
                return ""
            if any(head.startswith(op) for op in _OPENERS):
                self._mode = "call"
                return ""
            if any(op.startswith(head) for op in _OPENERS):
                return ""
            self._mode = "text"
        if self._mode == "text":
            at = self._buffer.find(_TAG)
            if at >= 0:
                self._mode = "call"
                out, self._buffer = self._buffer[:at], self._buffer[at:]
                return out
            keep = _partial_suffix(self._buffer, _TAG)
            out, self._buffer = self._buffer[:len(self._buffer) - keep], self._buffer[len(self._buffer) - keep:]
            return out
        return ""

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The remaining text and the calls found in what was held back."""
        held, self._buffer = self._buffer, ""
        if self._mode != "call":
            return held, []
        return extract_tool_calls(held, self.names)


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of `text` that is a proper beginning of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
