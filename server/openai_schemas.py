"""Request bodies of the OpenAI-compatible API (/v1), with OpenAI's field names.

Parsed by `schemas.parse_body` like the native ones, so a bad field is a 400 naming it. Fields
OpenAI defines but Corral cannot honour (`n`, `logit_bias`, `user`) are accepted and ignored,
as Ollama ignores them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from corral.server.limits import (MAX_CHOICES, MAX_DIMENSIONS, MAX_INPUTS, MAX_MESSAGES, MAX_STOP_LENGTH, MAX_STOPS,
                                  MAX_TOKENS, MAX_TOOLS, OPTION_RANGES)
from corral.server.schemas import ModelField, Tool


class _Body(BaseModel):
    # strict: a string where a bool or a number belongs is an error naming the field, not coerced
    model_config = ConfigDict(extra="ignore", strict=True)


def _stop(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                raise PydanticCustomError("stop", "invalid type for 'stop' field: {kind}",
                                          {"kind": type(item).__name__})
        return value
    raise PydanticCustomError("stop", "invalid type for 'stop' field: {kind}", {"kind": type(value).__name__})


# The count bound sits on the list, not on the union: on `list | None` it would be applied to a null
# too, and pydantic raises a TypeError (a 500) for `"stop": null`.
Stop = Annotated[Annotated[list[Annotated[str, Field(max_length=MAX_STOP_LENGTH)]], Field(max_length=MAX_STOPS)]
                 | None, BeforeValidator(_stop)]
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: ModelField
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Tokens | None = None
    seed: Annotated[int, Field(ge=OPTION_RANGES["seed"][0], le=OPTION_RANGES["seed"][1])] | None = None
    stop: Stop = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ImageUrl(_Body):
    url: str


class ContentPart(_Body):
    type: Literal["text", "image_url", "input_audio"]
    text: str | None = None
    image_url: Annotated[ImageUrl | None, BeforeValidator(lambda v: {"url": v} if isinstance(v, str) else v)] = None


class FunctionCall(_Body):
    name: str
    arguments: str = "{}"


class MessageToolCall(_Body):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Annotated[Literal["system", "developer", "user", "assistant", "tool"],
                    BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None
    reasoning: str | None = None


def _messages(value: Any) -> Any:
    if value == []:
        raise PydanticCustomError("messages", "[] is too short - 'messages'")
    return value


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


def _tool_choice(value: Any) -> Any:
    if value is None or value in ("none", "auto", "required"):
        return value
    if isinstance(value, dict) and isinstance((value.get("function") or {}).get("name"), str):
        return value
    raise PydanticCustomError(
        "tool_choice", 'tool_choice must be "none", "auto", "required" or {"type": "function", '
        '"function": {"name": ...}}, got {raw}', {"raw": json.dumps(value)})


Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "ultra", "max"]


class Reasoning(_Body):
    """`reasoning: {"effort": ...}`, the newer spelling of `reasoning_effort` (it wins over it)."""

    effort: Effort | None = None


class ChatCompletionBody(_Sampling):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], BeforeValidator(_messages), Field(max_length=MAX_MESSAGES)]
    max_completion_tokens: Tokens | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Annotated[Any, BeforeValidator(_tool_choice)] = None
    reasoning_effort: Effort | None = None
    reasoning: Reasoning | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None


def _prompt(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    return value


class CompletionBody(_Sampling):
    """POST /v1/completions."""

    prompt: Annotated[str, BeforeValidator(_prompt)]
    suffix: str | None = None
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None


def _input(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise PydanticCustomError("input", "invalid input")


def _encoding(value: Any) -> Any:
    if value is None:
        return "float"
    if isinstance(value, str) and value.lower() in ("float", "base64"):
        return value.lower()
    raise PydanticCustomError("encoding_format", "Invalid value for 'encoding_format' = {raw}. "
                              "Supported values: ['float', 'base64'].", {"raw": str(value)})


class EmbeddingBody(_Body):
    """POST /v1/embeddings."""

    model: ModelField
    input: Annotated[list[str], BeforeValidator(_input), Field(max_length=MAX_INPUTS)]
    dimensions: Annotated[int, Field(ge=1, le=MAX_DIMENSIONS)] | None = None
    encoding_format: Annotated[str, BeforeValidator(_encoding)] = "float"
