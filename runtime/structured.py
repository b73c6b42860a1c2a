"""Structured output: Ollama's `format` and OpenAI's `response_format` as GBNF grammars.

The engine constrains sampling with a GBNF grammar; this module writes those grammars.

* `format: "json"` (or `response_format: {"type": "json_object"}`) uses llama-cpp-python's
  ready-made JSON grammar, whose root is an object, as Ollama's is.
* A JSON schema goes through llama-cpp-python's schema converter (`json_schema_to_gbnf`). Two fixes
  are applied to what it writes: string characters exclude control characters (it lets a raw
  newline into a string, which no JSON parser accepts), and remote `$ref`s stay disallowed.
* Tool calls (see tools.py) are a schema too: `{"name": <one tool's name>, "arguments": <that
  tool's parameters>}` for each tool, as alternatives, with `name` written first.

A schema the converter cannot handle is the client's error (InvalidRequestError, 400), reported
with the field name.

Both come from `llama_cpp/llama_grammar.py`, a pure-Python module (a port of llama.cpp's
json_schema_to_grammar.py). It is loaded from the installed llama-cpp-python by its path, without
running the `llama_cpp` package's `__init__`, which loads the native library: that happens only in
a model's worker process (corral.engine), never where requests are planned.
"""

from __future__ import annotations

import importlib.util
import json
import re
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Mapping

from corral.runtime.errors import InvalidRequestError

# The converter's string character rule, and the same rule without control characters.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'
_ROOT_RULE = re.compile(r"^root ::=", re.MULTILINE)

# Free text for "a tool call or a normal answer": anything that does not open a JSON object.
_TEXT_RULES = 'corral-text ::= [^{ \\t\\n] .*\n'


@cache
def _llama_grammar() -> ModuleType:
    """llama-cpp-python's `llama_grammar` module, loaded on its own (see the module docstring)."""
    package = importlib.util.find_spec("llama_cpp")  # finds the package without importing it
    if package is None or not package.submodule_search_locations:
        raise ImportError("llama-cpp-python is not installed")
    path = Path(next(iter(package.submodule_search_locations))) / "llama_grammar.py"
    spec = importlib.util.spec_from_file_location("corral._llama_grammar", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def json_grammar() -> str:
    """The grammar of any JSON object."""
    return _llama_grammar().JSON_GBNF


def schema_grammar(schema: Mapping[str, Any], *, field: str = "format",
                   prop_order: Iterable[str] = ()) -> str:
    """The grammar of the JSON values a schema accepts; InvalidRequestError when it cannot be converted."""
    try:
        grammar = _llama_grammar().json_schema_to_gbnf(json.dumps(schema), prop_order=list(prop_order))
    except (AssertionError, KeyError, TypeError, ValueError, NotImplementedError, RecursionError) as e:
        reason = str(e) or type(e).__name__
        raise InvalidRequestError(f"{field}: cannot turn this JSON schema into a grammar: {reason}",
                                  param=field) from None
    return grammar.replace(_LOOSE_CHAR, _STRICT_CHAR)


def format_grammar(fmt: str | Mapping[str, Any] | None, *, field: str = "format") -> str | None:
    """The grammar for a validated `format` value: None, "json" or a schema."""
    if fmt is None:
        return None
    if fmt == "json":
        return json_grammar()
    if isinstance(fmt, Mapping):
        return schema_grammar(fmt, field=field)
    raise InvalidRequestError(f'invalid format: {json.dumps(fmt)}; expected "json" or a valid JSON Schema object',
                              param=field)


def response_format_to_format(response_format: Mapping[str, Any] | None) -> str | dict | None:
    """OpenAI's `response_format` as an Ollama `format` (other types, such as "text", mean none)."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        schema = response_format.get("schema")  # llama-cpp-python's extension
        return dict(schema) if isinstance(schema, Mapping) and schema else "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise InvalidRequestError("response_format.json_schema.schema: a JSON schema object is required",
                                      param="response_format")
        return dict(schema) if schema else "json"
    return None


def tool_call_schema(tools: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A schema for one call of one of `tools` (each `{"name", "parameters"}`)."""
    alternatives = []
    for tool in tools:
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
        alternatives.append({
            "type": "object",
            "properties": {"name": {"const": tool["name"]}, "arguments": _closed(parameters)},
            "required": ["name", "arguments"],
        })
    if not alternatives:
        raise ValueError("tool_call_schema needs at least one tool")
    return alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}


def tool_call_grammar(tools: Iterable[Mapping[str, Any]], *, allow_text: bool) -> str:
    """The grammar of a tool call JSON object; with `allow_text`, of a plain answer too.

    A plain answer is any text that does not start with `{`, so the model either answers normally
    or, once it writes `{`, is held to a well-formed call of a tool that exists.
    """
    grammar = schema_grammar(tool_call_schema(tools), field="tools", prop_order=("name", "arguments"))
    if not allow_text:
        return grammar
    renamed = _ROOT_RULE.sub("corral-call ::=", grammar)
    return "root ::= corral-call | corral-text\n" + _TEXT_RULES + renamed


def _closed(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Tool parameters without properties the tool did not declare (small models invent them)."""
    schema = dict(parameters)
    if schema.get("type") == "object" and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema
