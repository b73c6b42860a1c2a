"""The validated intermediate representation of a model definition (frozen pydantic).

Both front ends (Modelfile and TOML) end here. Every node keeps the Span it came from, but spans
and comments are left out of equality and of `model_dump()`, so the same model written twice, in
either syntax, compares equal.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from corral.dsl.parameters import PARAMETERS, ParamValue
from corral.dsl.span import Span

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")

# Semantic versioning 2.0.0, without the leading "v" (REQUIRES adds and strips it as Ollama does).
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def _clean_text(value: str) -> str:
    for ch in value:
        if ch not in "\t\n" and (ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0):
            raise ValueError(f"control character U+{ord(ch):04X} is not allowed in text")
    return value


class Node(BaseModel):
    """Base of IR nodes: frozen, with a span and comments that equality ignores."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    span: Span | None = Field(default=None, exclude=True, repr=False)
    # Comment lines written just before this node in a Modelfile; `fmt` keeps them with it.
    comments: tuple[str, ...] = Field(default=(), exclude=True, repr=False)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.model_dump() == other.model_dump()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash(json.dumps(self.model_dump(), sort_keys=True, default=str))


class Text(Node):
    """A string value of a command (FROM, TEMPLATE, SYSTEM, ADAPTER, LICENSE, ...)."""

    value: str

    _check = field_validator("value")(_clean_text)


class Parameter(Node):
    name: str
    value: ParamValue

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in PARAMETERS:
            raise ValueError(f"unknown parameter {name!r}")
        return name


class Message(Node):
    role: Role
    content: str

    _check = field_validator("content")(_clean_text)


class ModelDefinition(Node):
    """A model definition: where the weights come from and how the model is to be run."""

    from_: Text
    parameters: tuple[Parameter, ...] = ()
    template: Text | None = None
    system: Text | None = None
    adapters: tuple[Text, ...] = ()
    projector: Text | None = None  # a multimodal projector (mmproj) GGUF: the model sees images
    licenses: tuple[Text, ...] = ()
    messages: tuple[Message, ...] = ()
    requires: Text | None = None
    # Commands Ollama accepts that Corral does not act on yet: kept so nothing is lost.
    draft: Text | None = None
    renderer: Text | None = None
    parser: Text | None = None
    # Comment lines after the last command of a Modelfile.
    trailing_comments: tuple[str, ...] = Field(default=(), exclude=True, repr=False)

    @field_validator("parameters")
    @classmethod
    def _unique(cls, params: tuple[Parameter, ...]) -> tuple[Parameter, ...]:
        names = [p.name for p in params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"parameters given more than once: {', '.join(dupes)}")
        return params

    @field_validator("requires")
    @classmethod
    def _semver(cls, value: Text | None) -> Text | None:
        if value is not None and not SEMVER.match(value.value):
            raise ValueError(f"requires must be a semantic version such as 0.5.0, got {value.value!r}")
        return value

    def parameter(self, name: str) -> ParamValue | None:
        """The value of parameter `name`, or None when the definition does not set it."""
        for p in self.parameters:
            if p.name == name:
                return p.value
        return None

    def parameter_dict(self) -> dict[str, ParamValue]:
        """Parameters as a plain dict in definition order (stop as a list of strings)."""
        return {p.name: (list(p.value) if isinstance(p.value, tuple) else p.value) for p in self.parameters}
