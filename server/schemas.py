"""Request bodies of the native API (Ollama's field names), and how any body is read.

`parse_body` turns bytes into a validated model or raises BadRequestError whose message names
the field at fault: `messages.0.role: Input should be 'system', 'user', 'assistant' or 'tool'`.
Unknown fields are ignored, as Ollama's JSON decoder ignores them. Sampling defaults are not set
here: a field the client left out stays out, so the model's own parameters apply.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      model_validator)
from pydantic_core import PydanticCustomError

from corral.dsl.parameters import DEPRECATED, PARAMETERS, ParamValueError, coerce
from corral.config.durations import DurationError, parse_keep_alive
from corral.server.errors import BadRequestError
from corral.server.limits import (DEPTH_MESSAGE, MAX_CONTEXT_TOKENS, MAX_DIMENSIONS, MAX_INPUTS, MAX_JSON_DEPTH,
                                  MAX_MESSAGES, MAX_NAME_LENGTH, MAX_TOOLS, json_depth, option_problem)

log = logging.getLogger(__name__)

Body = TypeVar("Body", bound=BaseModel)


def parse_body(raw: bytes | None, model: type[Body]) -> Body:
    """Decode and validate a JSON request body."""
    if not raw or not raw.strip():
        raise BadRequestError("missing request body")
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise BadRequestError(DEPTH_MESSAGE) from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, and Python's limit on integer digits
        raise BadRequestError(f"invalid JSON in the request body: {e}") from None
    if not isinstance(data, dict):
        raise BadRequestError(f"the request body must be a JSON object, got {_json_type(data)}")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise BadRequestError(DEPTH_MESSAGE)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        message, param = describe(e)
        raise BadRequestError(message, param=param) from None


def describe(error: ValidationError) -> tuple[str, str | None]:
    """`field.path: message` for each problem (joined by '; '), and the first field's path."""
    parts: list[str] = []
    first: str | None = None
    for item in error.errors(include_url=False):
        loc = [str(p) for p in item["loc"]] + list((item.get("ctx") or {}).get("subloc", ()))
        path = ".".join(loc)
        message = item["msg"].removeprefix("Value error, ")
        # A message that already starts with the field's name reads better without the prefix.
        text = f"{path}: {message}" if path and not message.startswith(path + " ") else message
        if text not in parts:
            parts.append(text)
        first = first or path or None
    return "; ".join(parts), first


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def _json_type(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


# -- reusable field types ----------------------------------------------------------------------

def _model_name(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("model_required", "model is required")
    if len(value) > MAX_NAME_LENGTH:  # refused here, before any message could echo it back
        raise PydanticCustomError("name_length", "the name is {length} characters long; the limit is {limit}",
                                  {"length": len(value), "limit": MAX_NAME_LENGTH})
    return value


ModelField = Annotated[str, AfterValidator(_model_name)]


def _keep_alive(value: Any) -> float | None:
    try:
        return parse_keep_alive(value)
    except DurationError as e:
        raise PydanticCustomError("keep_alive", str(e)) from None


KeepAlive = Annotated[float | None, BeforeValidator(_keep_alive)]
"""Seconds; None: the server default; negative: forever."""


def _format(value: Any) -> Any:
    if value is None or value == "":
        return None
    if value == "json" or value == {}:  # an empty schema allows any JSON
        return "json"
    if isinstance(value, dict):
        return value
    raw = json.dumps(value, ensure_ascii=False)
    raise PydanticCustomError("format", 'invalid format: {raw}; expected "json" or a valid JSON Schema object',
                              {"raw": raw})


Format = Annotated[Any, BeforeValidator(_format)]
"""None, "json", or a JSON schema (dict)."""


def _think(value: Any) -> Any:
    if value is None or isinstance(value, bool) or value in ("high", "medium", "low", "max"):
        return value
    raise PydanticCustomError(
        "think", 'invalid think value: {raw} (must be "high", "medium", "low", "max", true, or false)',
        {"raw": json.dumps(value)})


Think = Annotated[bool | str | None, BeforeValidator(_think)]


def _options(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        return value  # the dict type check reports it
    checked: dict[str, Any] = {}
    for key, raw in value.items():
        spec = PARAMETERS.get(key)
        if spec is None:
            log.warning("ignoring %s option %r", "deprecated" if key in DEPRECATED else "unknown", key)
            continue
        if raw is None:
            continue
        try:
            checked[key] = coerce(spec, raw)
        except ParamValueError as e:
            raise PydanticCustomError("option", str(e), {"subloc": (key,)}) from None
        problem = option_problem(key, checked[key])
        if problem:
            raise PydanticCustomError("option", problem, {"subloc": (key,)})
    return checked


Options = Annotated[dict[str, Any], BeforeValidator(_options)]
"""Modelfile parameters, type-checked; unknown ones dropped with a warning (as Ollama does)."""


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _null_is_empty(value: Any) -> Any:
    return "" if value is None else value


class _Body(BaseModel):
    # strict: a string where a bool or a number belongs is an error naming the field, not coerced
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)


def _name_alias(data: Any) -> Any:
    """Accept Ollama's deprecated `name` for `model`."""
    if isinstance(data, dict) and "model" not in data and "name" in data:
        data = {**data, "model": data["name"]}
    return data


# -- chat pieces -------------------------------------------------------------------------------

def _arguments(value: Any) -> Any:
    if isinstance(value, str):  # some clients send the arguments JSON-encoded, as OpenAI does
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            raise PydanticCustomError("arguments", "invalid tool call arguments") from None
    return {} if value is None else value


class ToolCallFunction(_Body):
    index: int | None = None
    name: str
    arguments: Annotated[dict[str, Any], BeforeValidator(_arguments)] = Field(default_factory=dict)


class ToolCall(_Body):
    id: str | None = None
    function: ToolCallFunction


class Message(_Body):
    role: Annotated[Literal["system", "user", "assistant", "tool"], BeforeValidator(_lower)]
    content: Annotated[str, BeforeValidator(_null_is_empty)] = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class ToolFunction(_Body):
    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(_Body):
    type: Literal["function"] = "function"
    function: ToolFunction


# -- endpoints ---------------------------------------------------------------------------------

def _top_logprobs(value: int) -> int:
    if not 0 <= value <= 20:
        raise PydanticCustomError("top_logprobs", "top_logprobs must be between 0 and 20")
    return value


class _Inference(_Body):
    model: ModelField
    stream: bool = True
    format: Format = None
    keep_alive: KeepAlive = None
    options: Options = Field(default_factory=dict)
    think: Think = None
    truncate: bool | None = None
    shift: bool | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, AfterValidator(_top_logprobs)] = 0
    # Ollama's: answer the rendered prompt instead of generating (a leading _ is private to pydantic)
    debug_render_only: bool = Field(default=False, alias="_debug_render_only")


class GenerateBody(_Inference):
    """POST /api/generate."""

    prompt: Annotated[str, BeforeValidator(_null_is_empty)] = ""
    suffix: str = ""
    system: str | None = None
    template: str | None = None
    context: Annotated[list[Annotated[int, Field(ge=0, lt=2**31)]], Field(max_length=MAX_CONTEXT_TOKENS)] | None = None
    raw: bool = False
    images: list[str] | None = None

    @model_validator(mode="after")
    def _raw_alone(self):
        if self.raw and (self.template or self.system or self.context):
            raise PydanticCustomError("raw", "raw mode does not support template, system, or context")
        return self


class ChatBody(_Inference):
    """POST /api/chat."""

    messages: Annotated[list[Message], Field(max_length=MAX_MESSAGES)] = Field(default_factory=list)
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None


def _embed_input(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise PydanticCustomError("input", "invalid input type")


class EmbedBody(_Body):
    """POST /api/embed."""

    model: ModelField
    input: Annotated[list[str], BeforeValidator(_embed_input), Field(max_length=MAX_INPUTS)] = Field(default_factory=list)
    truncate: bool = True
    dimensions: Annotated[int, Field(ge=1, le=MAX_DIMENSIONS)] | None = None
    keep_alive: KeepAlive = None
    options: Options = Field(default_factory=dict)


class EmbeddingsBody(_Body):
    """POST /api/embeddings (legacy: one prompt, vector not normalized)."""

    model: ModelField
    prompt: Annotated[str, BeforeValidator(_null_is_empty)] = ""
    keep_alive: KeepAlive = None
    options: Options = Field(default_factory=dict)


class ShowBody(_Body):
    """POST /api/show."""

    model: ModelField
    verbose: bool = False
    system: str | None = None
    template: str | None = None
    options: Options = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, data: Any) -> Any:
        return _name_alias(data)


class CreateMessage(_Body):
    role: Annotated[Literal["system", "user", "assistant"], BeforeValidator(_lower)]
    content: Annotated[str, BeforeValidator(_null_is_empty)] = ""


def _license(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class CreateBody(_Body):
    """POST /api/create, in Ollama's current shape."""

    model: ModelField
    from_: str | None = Field(default=None, alias="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    license: Annotated[list[str] | None, BeforeValidator(_license)] = None
    parameters: dict[str, Any] | None = None
    messages: list[CreateMessage] | None = None
    requires: str | None = None
    parser: str | None = None
    renderer: str | None = None
    remote_host: str | None = None  # refused: a model served by another host (models_api.create)
    quantize: str | None = None
    insecure: bool = False  # Corral's: a `from` model pulled from a plain-http registry
    stream: bool = True

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        data = _name_alias(data)
        if isinstance(data, dict) and "quantize" not in data and "quantization" in data:
            data = {**data, "quantize": data["quantization"]}
        return data


class TransferBody(_Body):
    """POST /api/pull and /api/push (push's `username` and `password`, which Ollama ignores, too)."""

    model: ModelField
    insecure: bool = False
    stream: bool = True

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, data: Any) -> Any:
        return _name_alias(data)


class CopyBody(_Body):
    """POST /api/copy."""

    source: ModelField
    destination: ModelField


class DeleteBody(_Body):
    """DELETE /api/delete."""

    model: ModelField

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, data: Any) -> Any:
        return _name_alias(data)
