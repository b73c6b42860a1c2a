"""The table of model parameters: names, types, ranges and meanings, as Ollama accepts them.

One table serves the Modelfile (values arrive as text), the TOML form and API `options` (values
arrive typed). `stop` is the only list: it accumulates, one PARAMETER line per sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Union

ParamType = Literal["int", "float", "bool", "str_list"]
ParamValue = Union[bool, int, float, tuple[str, ...]]

# Go's strconv.ParseBool spellings, which Ollama's FormatParams uses.
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


@dataclass(frozen=True, slots=True)
class ParamSpec:
    name: str
    type: ParamType
    help: str
    minimum: float | None = None
    maximum: float | None = None
    load_time: bool = False  # changing it means reloading the weights, not just the spec

    def range_text(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"between {_num(self.minimum)} and {_num(self.maximum)}"
        if self.minimum is not None:
            return f"at least {_num(self.minimum)}"
        if self.maximum is not None:
            return f"at most {_num(self.maximum)}"
        return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_INT64 = 2**63 - 1

PARAMETERS: dict[str, ParamSpec] = {
    spec.name: spec
    for spec in [
        ParamSpec("num_ctx", "int", "context window in tokens", 1, 2**24, load_time=True),
        ParamSpec("num_batch", "int", "prompt tokens decoded per batch", 1, 2**20, load_time=True),
        ParamSpec("num_gpu", "int", "layers to offload to the GPU (-1: decide from the memory plan)", -1, 10_000, load_time=True),
        ParamSpec("main_gpu", "int", "GPU that holds small tensors and scratch buffers", 0, 255, load_time=True),
        ParamSpec("num_thread", "int", "CPU threads for decoding (0: decide at runtime)", 0, 1024, load_time=True),
        ParamSpec("use_mmap", "bool", "memory-map the weights instead of reading them", load_time=True),
        ParamSpec("draft_num_predict", "int", "tokens the draft model proposes per step", 0, 256, load_time=True),
        ParamSpec("num_keep", "int", "prompt tokens kept when the context shifts", -1),
        ParamSpec("seed", "int", "random seed (-1: random)", -1),
        ParamSpec("num_predict", "int", "most tokens to generate (-1: unlimited, -2: fill the context)", -2),
        ParamSpec("top_k", "int", "sample from the k most likely tokens (0: off)", 0),
        ParamSpec("top_p", "float", "nucleus sampling probability mass", 0, 1),
        ParamSpec("min_p", "float", "minimum probability relative to the most likely token", 0, 1),
        ParamSpec("typical_p", "float", "locally typical sampling mass (1: off)", 0, 1),
        ParamSpec("repeat_last_n", "int", "tokens looked back for repetition penalties (-1: num_ctx, 0: off)", -1),
        ParamSpec("temperature", "float", "sampling temperature (0: greedy)", 0, 100),
        ParamSpec("repeat_penalty", "float", "penalty for repeated tokens (1: off)", 0, 100),
        ParamSpec("presence_penalty", "float", "penalty for tokens already present", -100, 100),
        ParamSpec("frequency_penalty", "float", "penalty proportional to a token's frequency", -100, 100),
        ParamSpec("stop", "str_list", "a sequence that ends generation (repeatable)"),
    ]
}

# Ollama prints `warning: parameter <name> is deprecated` for these and drops them.
DEPRECATED: frozenset[str] = frozenset(
    {"penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock",
     "mirostat", "mirostat_tau", "mirostat_eta"}
)

LOAD_TIME: frozenset[str] = frozenset(n for n, s in PARAMETERS.items() if s.load_time)


class ParamValueError(ValueError):
    """A parameter value has the wrong type or is out of range; the message is user-facing."""


def kind(spec: ParamSpec) -> str:
    """The type of a parameter in words ("an integer", "a number", ...)."""
    return {"int": "an integer", "float": "a number", "bool": "true or false",
            "str_list": "a string"}[spec.type]


def parse_text(spec: ParamSpec, text: str) -> ParamValue:
    """Convert a Modelfile parameter value (text) to its typed value, checking the range."""
    if spec.type == "int":
        try:
            value: ParamValue = int(text.strip(), 10)
        except ValueError:
            raise ParamValueError(f"expected {kind(spec)}, got {text!r}") from None
    elif spec.type == "float":
        try:
            value = float(text)
        except ValueError:
            raise ParamValueError(f"expected {kind(spec)}, got {text!r}") from None
    elif spec.type == "bool":
        if text in _TRUE:
            value = True
        elif text in _FALSE:
            value = False
        else:
            raise ParamValueError(f"expected {kind(spec)}, got {text!r}")
    else:
        value = (text,)
    return check(spec, value)


def coerce(spec: ParamSpec, raw: object) -> ParamValue:
    """Check a typed value (from TOML or JSON) against the spec; ints are accepted for floats."""
    if spec.type == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            if isinstance(raw, float) and raw.is_integer():
                raw = int(raw)
            else:
                raise ParamValueError(f"expected {kind(spec)}, got {_describe(raw)}")
        value: ParamValue = raw
    elif spec.type == "float":
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ParamValueError(f"expected {kind(spec)}, got {_describe(raw)}")
        value = float(raw)
    elif spec.type == "bool":
        if not isinstance(raw, bool):
            raise ParamValueError(f"expected {kind(spec)}, got {_describe(raw)}")
        value = raw
    else:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) for s in items):
            raise ParamValueError(f"expected a string or a list of strings, got {_describe(raw)}")
        value = tuple(items)
    return check(spec, value)


def check(spec: ParamSpec, value: ParamValue) -> ParamValue:
    """Range-check a typed value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ParamValueError(f"expected a finite number, got {value}")
        if isinstance(value, int) and not -(2**63) <= value <= _INT64:
            raise ParamValueError(f"{spec.name} does not fit in 64 bits, got {value}")
        low, high = spec.minimum, spec.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise ParamValueError(f"{spec.name} must be {spec.range_text()}, got {_num(value)}")
    if isinstance(value, tuple):
        if any(s == "" for s in value):
            raise ParamValueError("a stop sequence cannot be empty")
    return value


def _describe(raw: object) -> str:
    if isinstance(raw, str):
        return f"the string {raw!r}"
    if isinstance(raw, bool):
        return "a boolean"
    if isinstance(raw, (int, float)):
        return f"the number {raw}"
    if isinstance(raw, (list, tuple)):
        return "a list"
    if isinstance(raw, dict):
        return "a table"
    return type(raw).__name__


def value_to_text(value: ParamValue) -> str:
    """The Modelfile spelling of a scalar parameter value (inverse of parse_text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)
