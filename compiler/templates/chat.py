"""Chat templates: compiled once, checked at compile time, rendered the way Ollama renders them.

A template is either Go `text/template` (a Modelfile's TEMPLATE, Ollama's own format) or
Hugging Face Jinja (a GGUF's `tokenizer.chat_template`). Both end up as Jinja run in a
sandbox (`template_sandbox`); Go templates are translated first (`gotemplate`) and
rendered with Ollama's rules: messages collated, a `.Messages` template executed once,
a legacy `.System/.Prompt/.Response` template executed turn by turn.

`compile_template` test-renders every template on a sample conversation, so a template
that cannot work fails when the model definition is compiled, with the line at fault,
instead of on the first request.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from corral.compiler.gotemplate import values
from corral.compiler.errors import TemplateError
from corral.compiler.gotemplate import GoTemplate, template_span, translate
from corral.compiler.gotemplate.values import GoExecError
from corral.compiler.templates.library import known_stops, library_names, library_template, recognise
from corral.compiler.templates.sandbox import TemplateRaised, compile_jinja, go_environment, hf_environment, render_jinja
from corral.dsl.span import Span

__all__ = ["ChatTemplate", "TemplateKind", "compile_template", "detect_kind", "known_stops", "recognise"]

TemplateKind = Literal["go", "jinja"]
Think = bool | str | None

_JINJA_TAG = re.compile(r"\{[%#]")
_GO_ACTION = re.compile(
    r"\{\{-?\s*(?:[.$]|/\*|(?:end|else|range|with|define|template|block|break|continue)\b"
    r"|(?:if|not|and|or|eq|ne|lt|le|gt|ge|len|index|slice|print|printf|println|json)\s+[.$(\"'`])")
_JINJA_EXPRESSION = re.compile(r"\{\{-?\s*[A-Za-z_]")

_SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
_USER = {"role": "user", "content": "Hello, how are you?"}
_ASSISTANT = {"role": "assistant", "content": "I'm doing great. How can I help you today?"}
_FOLLOW_UP = {"role": "user", "content": "Tell me a joke."}
# Tried in order: many Hugging Face templates reject a system message or want one exchange.
_SAMPLES: tuple[tuple[dict[str, str], ...], ...] = (
    (_SYSTEM, _USER, _ASSISTANT, _FOLLOW_UP), (_USER, _ASSISTANT, _FOLLOW_UP), (_USER,))
_SAMPLE_HINT = "found by test-rendering a sample system/user/assistant conversation"


def detect_kind(text: str) -> TemplateKind:
    """Whether template text is Go `text/template` or Jinja.

    Jinja block tags (`{%`, `{#`) decide for Jinja; actions that only Go writes (`{{ .X }}`,
    `{{ $x }}`, `{{ end }}`, `{{ if .X }}`, ...) for Go; a bare name (`{{ bos_token }}`)
    for Jinja. Text without any action is treated as Go, Ollama's format.
    """
    if _JINJA_TAG.search(text):
        return "jinja"
    if _GO_ACTION.search(text):
        return "go"
    return "jinja" if _JINJA_EXPRESSION.search(text) else "go"


@functools.cache
def _library_by_text() -> dict[str, str]:
    return {library_template(name): name for name in library_names()}


def _with_system(messages: Iterable[Mapping[str, Any]], system: str | None) -> list[Mapping[str, Any]]:
    """Ollama's chat rule: the model's SYSTEM goes first unless the conversation opens with one."""
    conversation = list(messages)
    if system and (not conversation or conversation[0].get("role") != "system"):
        conversation.insert(0, {"role": "system", "content": system})
    return conversation


@dataclass(frozen=True)
class ChatTemplate:
    """A compiled chat template. Build it with `compile_template`, which also checks it."""

    source: str                     # the template text as given
    kind: TemplateKind
    jinja: str                      # the Jinja that renders it (the source itself for Jinja)
    name: str | None = None         # the Ollama named template it is, if recognised
    go: GoTemplate | None = field(default=None, repr=False, compare=False)
    origin: Span | None = field(default=None, repr=False, compare=False)

    def render(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = True, bos_token: str = "", eos_token: str = "",
               system: str | None = None, think: Think = None) -> str:
        """The prompt for a conversation.

        `system` is the model's default system prompt, used when the conversation does not
        start with one. Go templates ignore `add_generation_prompt`, `bos_token` and
        `eos_token` (Ollama's templates always end ready for the reply and have no such
        variables); `think` fills Go's `.Think`/`.ThinkLevel`/`.IsThinkSet` and Jinja's
        `enable_thinking`/`reasoning_effort`. Raises TemplateError if rendering fails.
        """
        return self._render(messages, tools, add_generation_prompt, bos_token, eos_token, system, think, None)

    def _render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                add_generation_prompt: bool, bos_token: str, eos_token: str, system: str | None,
                think: Think, hint: str | None) -> str:
        conversation = _with_system(messages, system)
        if self.go is None:
            return self._render_jinja(conversation, tools, add_generation_prompt, bos_token,
                                      eos_token, think, hint)
        try:
            system_text, collated = values.collate(conversation)
            tool_values = values.tools(tools)
        except GoExecError as e:
            raise TemplateError(f"cannot pass the conversation to the template: {e}",
                                self.go.span_at(1), hint) from e
        thinking = {"Think": bool(think), "ThinkLevel": think if isinstance(think, str) else "",
                    "IsThinkSet": think is not None}
        if self.go.uses_messages:
            return self._run_go(False, {"System": system_text, "Messages": collated,
                                        "Tools": tool_values, "Response": "", **thinking}, hint)
        return self._render_legacy(collated, thinking, hint)

    def _render_jinja(self, conversation: list[Mapping[str, Any]], tools: Any, add_generation_prompt: bool,
                      bos_token: str, eos_token: str, think: Think, hint: str | None) -> str:
        context: dict[str, Any] = {"messages": conversation, "tools": tools,
                                   "add_generation_prompt": add_generation_prompt,
                                   "bos_token": bos_token, "eos_token": eos_token}
        if think is not None:
            context["enable_thinking"] = bool(think)
            if isinstance(think, str):
                context["reasoning_effort"] = think

        def where(line: int) -> Span:
            return template_span(self.source, self.origin, line)

        template = compile_jinja(hf_environment(), self.jinja, where)
        return render_jinja(template, context, where, hint)

    def _run_go(self, final: bool, data: dict[str, Any], hint: str | None) -> str:
        go = self.go
        assert go is not None
        source = go.final_jinja if final else go.jinja
        assert source is not None

        def where(line: int) -> Span:
            return go.span_at(line, final)

        template = compile_jinja(go_environment(), source, where)
        return render_jinja(template, {"root": data}, where, hint)

    def _render_legacy(self, collated: list[values.GoStruct], thinking: dict[str, Any], hint: str | None) -> str:
        """Ollama's turn-by-turn execution of a template without `.Messages`."""
        out: list[str] = []
        turn = {"System": "", "Prompt": "", "Response": ""}

        def flush() -> None:
            out.append(self._run_go(False, {**turn, **thinking}, hint))
            turn.update(System="", Prompt="", Response="")

        for message in collated:
            role, content = message.fields["Role"], message.fields["Content"]
            if role == "system":
                if turn["Prompt"] or turn["Response"]:
                    flush()
                turn["System"] = content
            elif role == "user":
                if turn["Response"]:
                    flush()
                turn["Prompt"] = content
            elif role == "assistant":
                turn["Response"] = content
            # tool messages have no place in a legacy template and are skipped, as in Ollama
        out.append(self._run_go(True, {**turn, **thinking}, hint))
        return "".join(out)

    def check(self) -> None:
        """Test-render sample conversations; raises TemplateError if the template cannot work."""
        last: TemplateError | None = None
        for sample in _SAMPLES:
            try:
                self._render([dict(m) for m in sample], None, True, "", "", None, None, _SAMPLE_HINT)
                return
            except TemplateError as e:
                if not isinstance(e.__cause__, TemplateRaised):
                    raise
                last = e  # the template refused this conversation on purpose; try a simpler one
        assert last is not None
        raise last


def compile_template(text: str, *, kind: TemplateKind | None = None, origin: Span | None = None) -> ChatTemplate:
    """Compile and check a chat template.

    `kind` is detected when not given. `origin` is where the template text starts in its
    file (e.g. the TEMPLATE value of a Modelfile); error Spans are mapped onto it.
    Raises TemplateError if the template is invalid, untranslatable, unsafe, or fails to
    render a sample conversation.
    """
    kind = kind or detect_kind(text)
    if kind == "go":
        go = translate(text, origin=origin)
        name = _library_by_text().get(text.replace("\r\n", "\n"))
        template = ChatTemplate(text, "go", go.jinja, name, go, origin)
    elif kind == "jinja":
        template = ChatTemplate(text, "jinja", text, recognise(text), None, origin)
    else:
        raise TemplateError(f"unknown template kind {kind!r}", origin, "use 'go' or 'jinja'")
    template.check()
    return template
