"""Request bodies of the Anthropic Messages API (`POST /v1/messages`), with Anthropic's field names.

Parsed by `schemas.parse_body`, so a bad field is a 400 naming it (in Anthropic's error shape,
see errors.render_anthropic). Content blocks are validated by type; the block types Corral cannot
use are refused by anthropic_api, which names the block.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from corral.server.schemas import ModelField


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Block(_Body):
    """One content block; which fields matter depends on `type`."""

    type: str
    text: str | None = None
    source: dict[str, Any] | None = None  # image: {"type": "base64", "media_type", "data"}
    id: str | None = None  # tool_use
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None  # tool_result
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


class Message(_Body):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class TextBlock(_Body):
    type: Literal["text"] = "text"
    text: str


class ToolDefinition(_Body):
    name: Annotated[str, Field(min_length=1)]
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolChoice(_Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(_Body):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class OutputFormat(_Body):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Body):
    format: OutputFormat | None = None
    effort: str | None = None


def _messages(value: Any) -> Any:
    if value == []:
        raise PydanticCustomError("messages", "messages: at least one message is required")
    return value


class MessagesBody(_Body):
    """POST /v1/messages."""

    model: ModelField
    max_tokens: Annotated[int, Field(ge=1)]
    messages: Annotated[list[Message], BeforeValidator(_messages)]
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    stream: bool = False
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None  # structured output: format.schema holds the answer to it
    metadata: dict[str, Any] | None = None


class CountTokensBody(_Body):
    """POST /v1/messages/count_tokens: a messages body without max_tokens."""

    model: ModelField
    messages: Annotated[list[Message], BeforeValidator(_messages)]
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
