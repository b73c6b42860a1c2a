"""Thinking: splitting a reasoning model's output into its thinking and its answer, as it streams.

Two formats are parsed. The `<think>...</think>` family (Qwen3, DeepSeek-R1, Cogito, QwQ, ...):
thinking between the tags, the answer after; when the rendered prompt already ends with the
opening tag (R1's template, Qwen3-Thinking's) the output starts inside the thinking, and when it
ends with the closing tag (an empty block: thinking turned off) the output is all answer. And
gpt-oss's harmony channels: `<|channel|>analysis<|message|>...<|end|>` is thinking, the `final`
channel (and any other) the answer, the header tokens dropped. A message addressed to a tool
(`to=functions.NAME` in its header) is a tool call: it comes out as content in the
`<tool_call>{"name": ..., "arguments": ...}</tool_call>` form that corral.runtime.tools reads.

`parser_name(spec)` chooses the format: the definition's PARSER, else what the template and the
architecture show; `supports_thinking(spec)` says whether there is one (both from
corral.compiler.thinking, so that model descriptions below the runtime can ask too). Parsers are
pure: `feed` a chunk, get the thinking and content that are certain, holding back only the bytes
that may be the start of a tag; `finish` gives what is held. Any split gives the same result.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Protocol

from corral.compiler.spec import THINKING_PARSERS
from corral.compiler.thinking import parser_name, supports_thinking

__all__ = ["Split", "ThinkingParser", "ThinkTagParser", "HarmonyParser", "make_parser", "parser_name",
           "supports_thinking"]

OPEN, CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Split:
    """What one step of parsing made certain."""

    thinking: str = ""
    content: str = ""

    def __add__(self, other: Split) -> Split:
        return Split(self.thinking + other.thinking, self.content + other.content)


class ThinkingParser(Protocol):
    def feed(self, text: str) -> Split: ...

    def finish(self) -> Split: ...


def make_parser(name: str, prompt: str) -> ThinkingParser:
    """A fresh parser for one generation whose rendered prompt was `prompt`."""
    if name not in THINKING_PARSERS:
        raise ValueError(f"unknown thinking parser {name!r}")
    if name == "harmony":
        return HarmonyParser()
    tail = prompt.rstrip()
    if tail.endswith(OPEN):
        return ThinkTagParser(start="thinking")
    if tail.endswith(CLOSE):
        return ThinkTagParser(start="content")
    return ThinkTagParser(start="thinking" if name in _OPEN_IN_PROMPT else "before")


# Models whose templates open the thinking in the prompt even when its text does not show it here
# (a template override, raw mode): their output starts inside the thinking.
_OPEN_IN_PROMPT = {"deepseek-r1", "qwen3-thinking"}


def _held(text: str, tags: tuple[str, ...]) -> int:
    """How many bytes at the end of `text` may be the start of one of `tags`."""
    for n in range(min(len(text), max(len(t) for t in tags) - 1), 0, -1):
        if any(t.startswith(text[-n:]) for t in tags):
            return n
    return 0


class ThinkTagParser:
    """`<think>...</think>` thinking, then the answer. Whitespace right after either tag is
    dropped, as Ollama drops it; text before any opening tag is the answer."""

    def __init__(self, start: str = "before"):
        # before: no tag seen yet (leading whitespace skipped); thinking / content: inside each;
        # the *_start states skip the whitespace that follows a tag.
        self.state = {"before": "before", "thinking": "thinking_start", "content": "content"}[start]
        self.buffer = ""

    def feed(self, text: str) -> Split:
        self.buffer += text
        out = Split()
        while True:
            step, more = self._step()
            out += step
            if not more:
                return out

    def _step(self) -> tuple[Split, bool]:
        buf = self.buffer
        if self.state in ("before", "thinking_start", "content_start"):
            stripped = buf.lstrip()
            if not stripped:
                self.buffer = ""
                return Split(), False
            self.buffer = buf = stripped
            if self.state == "before":
                if buf.startswith(OPEN):
                    self.buffer, self.state = buf[len(OPEN):], "thinking_start"
                    return Split(), True
                if OPEN.startswith(buf):
                    return Split(), False  # may still become the tag
                self.state = "content"
                return Split(), True
            self.state = "thinking" if self.state == "thinking_start" else "content"
            return Split(), True
        if self.state == "content":
            self.buffer = ""
            return Split(content=buf), False
        at = buf.find(CLOSE)
        if at >= 0:
            self.buffer, self.state = buf[at + len(CLOSE):], "content_start"
            return Split(thinking=buf[:at]), True
        keep = _held(buf, (CLOSE,))
        self.buffer = buf[len(buf) - keep:]
        return Split(thinking=buf[:len(buf) - keep]), False

    def finish(self) -> Split:
        buf, self.buffer = self.buffer, ""
        if self.state == "thinking":
            return Split(thinking=buf)
        return Split(content=buf) if self.state in ("before", "content") else Split()


_START, _CHANNEL, _MESSAGE, _CONSTRAIN = "<|start|>", "<|channel|>", "<|message|>", "<|constrain|>"
_ENDS = ("<|end|>", "<|return|>", "<|call|>")
_HARMONY_TOKENS = (_START, _CHANNEL, _MESSAGE, _CONSTRAIN, *_ENDS)


class HarmonyParser:
    """gpt-oss's harmony messages: a header (role, `<|channel|>NAME`, recipient) up to
    `<|message|>`, the text up to `<|end|>`, `<|return|>` or `<|call|>`. The analysis channel is
    thinking; the others are the answer. The prompt ends with `<|start|>assistant`, so the output
    starts in a header."""

    def __init__(self) -> None:
        self.in_header = True
        self.header = ""
        self.channel = ""
        self.recipient = ""  # the tool a message is addressed to: its text is a call, held whole
        self.call = ""
        self.buffer = ""

    def feed(self, text: str) -> Split:
        self.buffer += text
        out = Split()
        while self.buffer:
            if self.in_header:
                at = self.buffer.find(_MESSAGE)
                if at < 0:
                    return out  # headers are short: hold them whole until their end
                self.header += self.buffer[:at]
                self.buffer = self.buffer[at + len(_MESSAGE):]
                self.channel, self.recipient = _channel(self.header), _recipient(self.header)
                self.in_header, self.header = False, ""
                continue
            at, token = _first_token(self.buffer)
            if token is None:
                keep = _held(self.buffer, _HARMONY_TOKENS)
                cut = len(self.buffer) - keep
                out += self._text(self.buffer[:cut])
                self.buffer = self.buffer[cut:]
                return out
            out += self._text(self.buffer[:at])
            self.buffer = self.buffer[at + len(token):]
            if token in _ENDS or token == _START:
                out += self._end_message()
                self.in_header = True
            elif token == _CHANNEL:  # a header without its <|start|> (some outputs skip it)
                self.in_header, self.header = True, _CHANNEL
        return out

    def _text(self, text: str) -> Split:
        if self.recipient:
            self.call += text
            return Split()
        return Split(thinking=text) if self.channel == "analysis" else Split(content=text)

    def _end_message(self) -> Split:
        """The end of a message: a tool call's whole text, as a call block; nothing otherwise."""
        if not self.recipient:
            return Split()
        body, self.call, name, self.recipient = self.call.strip(), "", self.recipient, ""
        try:
            arguments = json.loads(body) if body else {}
        except ValueError:
            arguments = body  # not JSON: passed on as the arguments' text
        return Split(content=f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>")

    def finish(self) -> Split:
        buf, self.buffer = self.buffer, ""
        if self.in_header:
            # Plain text where a header was due is the answer; a header cut off is dropped.
            rest, self.header = self.header + buf, ""
            return Split() if rest.startswith("<|") or not rest.strip() else Split(content=rest)
        # <|call|> ends the generation (an end-of-generation token, so not in the text): a call
        # still open here is complete.
        return self._text(buf) + self._end_message()


def _first_token(text: str) -> tuple[int, str | None]:
    found = [(text.find(t), t) for t in _HARMONY_TOKENS if t in text]
    return min(found) if found else (-1, None)


def _recipient(header: str) -> str:
    """The tool a harmony header addresses (`to=functions.get_weather` names get_weather; another
    namespace keeps it: `to=browser.search`), or "" for a message to the user."""
    found = re.search(r"\bto=([^\s<]+)", header)
    if not found:
        return ""
    name = found.group(1)
    return name.removeprefix("functions.")


def _channel(header: str) -> str:
    """The channel a harmony header names (`assistant<|channel|>final`, `<|channel|>analysis`)."""
    if _CHANNEL not in header:
        return ""
    name = header.split(_CHANNEL, 1)[1]
    return re.split(r"\s|<\|", name, maxsplit=1)[0]
