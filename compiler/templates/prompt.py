"""The exact prompt text a model receives: a conversation, put together as Ollama does, rendered.

Shared by the APIs, `corral run` and `corral render`, so what `render` prints is what runs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

from corral.compiler.templates.chat import ChatTemplate, compile_template
from corral.compiler.spec import RuntimeSpec


@lru_cache(maxsize=128)
def template_for(source: str) -> ChatTemplate:
    """A compiled template, cached by its text (spec templates were test-rendered at compile time)."""
    return compile_template(source)


def conversation(spec: RuntimeSpec, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The definition's SYSTEM (unless the caller sends its own first) and MESSAGEs, then the caller's."""
    out = [m.model_dump() for m in spec.messages] + [dict(m) for m in messages]
    starts_with_system = bool(messages) and messages[0].get("role") == "system"
    if spec.system and not starts_with_system:
        out.insert(0, {"role": "system", "content": spec.system})
    return out


def render(spec: RuntimeSpec, messages: Sequence[dict[str, Any]], tools: list[dict] | None = None,
           template: str | None = None, think: bool | str | None = None) -> str:
    """Render already-assembled messages with the spec's template (or an override); `think` is
    the request's, passed to the template's thinking variables."""
    tmpl = template_for(template if template is not None else spec.template.source)
    return tmpl.render(list(messages), tools=tools or None, add_generation_prompt=True,
                       bos_token=spec.model.bos_token or "", eos_token=spec.model.eos_token or "", think=think)


def chat_prompt(spec: RuntimeSpec, messages: Sequence[dict[str, Any]], tools: list[dict] | None = None,
                think: bool | str | None = None) -> str:
    """The prompt for a chat request (/api/chat, /v1/chat/completions, `corral run`)."""
    return render(spec, conversation(spec, messages), tools, think=think)


def generate_prompt(spec: RuntimeSpec, prompt: str, system: str | None = None, template: str | None = None,
                    raw: bool = False, think: bool | str | None = None) -> str:
    """The prompt for a completion request (/api/generate, /v1/completions)."""
    if raw:
        return prompt
    messages: list[dict[str, Any]] = []
    if system or spec.system:
        messages.append({"role": "system", "content": system or spec.system})
    messages.append({"role": "user", "content": prompt})
    return render(spec, messages, None, template, think)
