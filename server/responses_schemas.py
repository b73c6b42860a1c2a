"""Request bodies of the OpenAI Responses API (`POST /v1/responses`), with OpenAI's field names.

Parsed by `schemas.parse_body`, so a bad field is a 400 naming it. Input items are kept loose
(a dict per item) and read by responses_api, which names the item at fault; fields Corral
cannot honour are listed in README's API section.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from corral.server.schemas import ModelField


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionTool(_Body):
    """A Responses function tool: flat, unlike chat's `{"type", "function": {...}}`."""

    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


def _tool(value: Any) -> Any:
    if isinstance(value, dict) and value.get("type") not in (None, "function"):
        raise PydanticCustomError("tool_type", "tools of type {kind!r} are not supported by this server, "
                                  "only function tools", {"kind": str(value.get("type"))})
    return value


def _tool_choice(value: Any) -> Any:
    if value is None or value in ("none", "auto", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
        return value
    raise PydanticCustomError("tool_choice", 'tool_choice must be "none", "auto", "required" or '
                              '{"type": "function", "name": ...}')


class TextFormat(_Body):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(_Body):
    format: TextFormat | None = None


class Reasoning(_Body):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: str | None = None


def _input(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return value
    raise PydanticCustomError("input", "input must be a string or a list of input items")


class ResponsesBody(_Body):
    """POST /v1/responses."""

    model: ModelField
    input: Annotated[str | list[dict[str, Any]], BeforeValidator(_input)]
    instructions: str | None = None
    tools: list[Annotated[FunctionTool, BeforeValidator(_tool)]] | None = None
    tool_choice: Annotated[Any, BeforeValidator(_tool_choice)] = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    stream: bool = False
    store: bool | None = None
    metadata: dict[str, str] | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
