"""Which thinking format a model has, from its spec alone (corral.runtime.thinking parses them).

Here rather than in the runtime so that everything that describes a model (the `thinking`
capability in /api/show and /api/tags, in corral.sources) can ask without reaching up a layer.
"""

from __future__ import annotations

import re

from corral.compiler.spec import THINKING_PARSERS, RuntimeSpec

__all__ = ["THINKING_PARSERS", "parser_name", "supports_thinking"]

# What a template that knows about thinking mentions: the tag, Go's variables, Jinja's switch and
# the message field Hugging Face templates read the thinking from.
_THINK_TEMPLATE = re.compile(r"<think>|\.Thinking\b|\.IsThinkSet\b|enable_thinking|reasoning_content")
_HARMONY_TEMPLATE = "<|channel|>"


def parser_name(spec: RuntimeSpec) -> str | None:
    """The thinking format of a model: its PARSER, else the one its template or architecture shows."""
    if spec.parser:
        return spec.parser
    template = spec.template.source
    if _HARMONY_TEMPLATE in template or spec.model.architecture == "gpt-oss":
        return "harmony"
    if _THINK_TEMPLATE.search(template):
        return "think"
    return None


def supports_thinking(spec: RuntimeSpec) -> bool:
    """Whether the model thinks in a format Corral parses (its `thinking` capability)."""
    return parser_name(spec) is not None
