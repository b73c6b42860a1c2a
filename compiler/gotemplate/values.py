"""The data a Go chat template sees, shaped the way Ollama hands it over.

Ollama executes templates over Go structs (`api.Message`, `api.Tool`, ...) and maps
(tool-call arguments, tool properties). Their Go types decide what a template can do with
them: a struct has a fixed set of fields (asking for another is an error), a map answers
any key (a missing one is nil), and several of them print as JSON through `String()`
methods. This module builds those values from API-shaped dicts and serialises them the
way Go's `encoding/json` does (struct field order, sorted map keys, `<>&` escaped).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from collections.abc import Iterable, Mapping
from typing import Any


class GoExecError(Exception):
    """A template failed while executing, as Go's `template: ...: error calling ...` would."""


# (Go field, JSON key, omitempty) for each struct type a template can meet.
Layout = tuple[tuple[str, str, bool], ...]
_MESSAGE: Layout = (("Role", "role", False), ("Content", "content", False),
                    ("Thinking", "thinking", True), ("Images", "images", True),
                    ("ToolCalls", "tool_calls", True), ("ToolName", "tool_name", True),
                    ("ToolCallID", "tool_call_id", True))
_TOOL_CALL: Layout = (("ID", "id", True), ("Function", "function", False))
_CALL_FUNCTION: Layout = (("Index", "index", True), ("Name", "name", False),
                          ("Arguments", "arguments", False))
_TOOL: Layout = (("Type", "type", False), ("Items", "items", True), ("Function", "function", False))
_TOOL_FUNCTION: Layout = (("Name", "name", False), ("Description", "description", True),
                          ("Parameters", "parameters", False))
_PARAMETERS: Layout = (("Type", "type", False), ("Defs", "$defs", True), ("Items", "items", True),
                       ("Required", "required", True), ("Properties", "properties", False))
_PROPERTY: Layout = (("AnyOf", "anyOf", True), ("Type", "type", True), ("Items", "items", True),
                     ("Description", "description", True), ("Enum", "enum", True),
                     ("Properties", "properties", True), ("Required", "required", True))


class GoStruct:
    """A Go struct value: fixed fields, always true, prints as its JSON."""

    __slots__ = ("type_name", "fields", "layout")

    def __init__(self, type_name: str, layout: Layout, values: Mapping[str, Any]):
        self.type_name = type_name
        self.layout = layout
        self.fields = {name: values[name] for name, _, _ in layout}

    def __bool__(self) -> bool:
        return True  # Go: a struct value is never "empty"

    def __repr__(self) -> str:
        return f"GoStruct({self.type_name}, {self.fields!r})"


class GoMap(dict):
    """A map whose Go type prints as JSON (tool-call arguments, tool properties)."""


class GoJsonList(list):
    """A slice whose Go type prints as JSON (`api.Tools`)."""


class PropertyType(tuple):
    """A tool property's type list: prints and marshals as one name when it holds one."""

    def __str__(self) -> str:
        if len(self) == 1:
            return self[0]
        return "[" + " ".join(self) + "]" if self else ""


def type_name(value: Any) -> str:
    """The Go type a value stands for, as fmt's `%!verb(type=value)` errors show it."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, GoStruct):
        return "api." + value.type_name
    if isinstance(value, PropertyType):
        return "api.PropertyType"
    if isinstance(value, GoJsonList):
        return "api.Tools"
    if isinstance(value, GoMap):
        return "api.ToolCallFunctionArguments"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return "[]interface {}"


# --- encoding/json ---------------------------------------------------------------------
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_float(value: float) -> str:
    """A float64 the way encoding/json writes it: shortest digits, exponent only when tiny or huge."""
    if math.isnan(value) or math.isinf(value):
        raise GoExecError(f"json: unsupported value: {value}")
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        text = repr(value)  # Python's shortest form already uses Go's e-07 / e+21 spelling
        mantissa, _, exponent = text.partition("e")
        sign, digits = exponent[0], exponent[1:].lstrip("0") or "0"
        return f"{mantissa}e{sign}{digits.zfill(1)}"
    return format(Decimal(repr(value)).normalize(), "f")


def go_json(value: Any) -> str:
    """Go's `json.Marshal` of a template value (compact, HTML-safe, map keys sorted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return "".join(_JSON_ESCAPES.get(c, c) for c in text)
    if isinstance(value, GoStruct):
        parts = [f"{go_json(key)}:{go_json(value.fields[name])}"
                 for name, key, omit in value.layout if not (omit and _is_empty(value.fields[name]))]
        return "{" + ",".join(parts) + "}"
    if isinstance(value, PropertyType) and len(value) == 1:
        return go_json(value[0])
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{go_json(str(k))}:{go_json(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    raise GoExecError(f"json: unsupported type {type(value).__name__}")


def _is_empty(value: Any) -> bool:
    """Go's omitempty test: false, 0, "", nil and empty collections are left out."""
    return not isinstance(value, GoStruct) and not value


# --- building values from API dicts ------------------------------------------------------
def _any(value: Any) -> Any:
    """A JSON value decoded into Go's `any`: every number becomes a float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _any(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_any(v) for v in value]
    return str(value)


def _text(value: Any) -> str:
    """Message content as one string; OpenAI-style content parts are joined."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(str(p.get("text", "")) for p in value if isinstance(p, Mapping))
    return str(value)


def _arguments(value: Any) -> GoMap:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as e:
            raise GoExecError(f"tool call arguments are not JSON: {e}") from None
    return GoMap(_any(value or {}))


def _tool_call(call: Mapping[str, Any]) -> GoStruct:
    function = call.get("function") or {}
    fn = GoStruct("ToolCallFunction", _CALL_FUNCTION, {
        "Index": int(function.get("index") or 0), "Name": str(function.get("name") or ""),
        "Arguments": _arguments(function.get("arguments"))})
    return GoStruct("ToolCall", _TOOL_CALL, {"ID": str(call.get("id") or ""), "Function": fn})


def message(m: Mapping[str, Any]) -> GoStruct:
    """An `api.Message` from an API message dict (Ollama or OpenAI shape)."""
    return GoStruct("Message", _MESSAGE, {
        "Role": str(m.get("role") or ""), "Content": _text(m.get("content")),
        "Thinking": str(m.get("thinking") or m.get("reasoning_content") or ""),
        "Images": list(m.get("images") or []),
        "ToolCalls": [_tool_call(c) for c in m.get("tool_calls") or []],
        "ToolName": str(m.get("tool_name") or m.get("name") or ""),
        "ToolCallID": str(m.get("tool_call_id") or ""),
    })


def _property(p: Mapping[str, Any]) -> GoStruct:
    kind = p.get("type")
    kinds = PropertyType([kind] if isinstance(kind, str) else [str(k) for k in kind or []])
    return GoStruct("ToolProperty", _PROPERTY, {
        "AnyOf": [_property(a) for a in p.get("anyOf") or []], "Type": kinds,
        "Items": _any(p.get("items")), "Description": str(p.get("description") or ""),
        "Enum": _any(list(p.get("enum") or [])),
        "Properties": _properties(p.get("properties")) if p.get("properties") else GoMap(),
        "Required": list(p.get("required") or []),
    })


def _properties(props: Any) -> GoMap | None:
    if props is None:
        return None
    return GoMap({str(k): _property(v or {}) for k, v in props.items()})


def tool(t: Mapping[str, Any]) -> GoStruct:
    """An `api.Tool` from an OpenAI-style tool dict."""
    fn = t.get("function") or {}
    params = fn.get("parameters") or {}
    parameters = GoStruct("ToolFunctionParameters", _PARAMETERS, {
        "Type": str(params.get("type") or ""), "Defs": _any(params.get("$defs")),
        "Items": _any(params.get("items")), "Required": list(params.get("required") or []),
        "Properties": _properties(params.get("properties"))})
    function = GoStruct("ToolFunction", _TOOL_FUNCTION, {
        "Name": str(fn.get("name") or ""), "Description": str(fn.get("description") or ""),
        "Parameters": parameters})
    return GoStruct("Tool", _TOOL, {"Type": str(t.get("type") or "function"),
                                    "Items": _any(t.get("items")), "Function": function})


def tools(items: Iterable[Mapping[str, Any]] | None) -> GoJsonList | None:
    """`api.Tools`, or nil when the request has none (so `{{ if .Tools }}` is false)."""
    return GoJsonList(tool(t) for t in items) if items else None


def collate(messages: Iterable[Mapping[str, Any]]) -> tuple[str, list[GoStruct]]:
    """Ollama's collate: all system texts joined by blank lines, and consecutive messages of
    one role merged (except tool results, which keep their own call ids)."""
    system: list[str] = []
    out: list[GoStruct] = []
    for raw in messages:
        m = message(raw)
        if m.fields["Role"] == "system":
            system.append(m.fields["Content"])
        if out and out[-1].fields["Role"] == m.fields["Role"] and m.fields["Role"] != "tool":
            out[-1].fields["Content"] += "\n\n" + m.fields["Content"]
        else:
            out.append(m)
    return "\n\n".join(system), out
