"""Ollama's `keep_alive` values: Go durations and plain numbers of seconds.

Ollama decodes `keep_alive` into an `api.Duration`:

* a JSON number is seconds (fractions allowed);
* a JSON string is parsed by Go's `time.ParseDuration` ("5m", "1h30m", "-1m", "0", "1.5s"), so a
  bare "300" is an error (`time: missing unit in duration "300"`);
* any other JSON type is an error (`Unsupported type: '<go type>'`);
* a negative value of either kind means "keep the model loaded forever"; 0 means "unload as soon as
  the request is done"; null or an absent field means the server's default.

The scheduler takes seconds as a float (`FOREVER` for negative), which is what `parse_keep_alive`
returns. `format_go_duration` writes the other way, as Go prints a `time.Duration` ("5m0s").
"""

from __future__ import annotations

import math
import re

FOREVER = -1.0
"""What `parse_keep_alive` returns for every negative duration: keep the model loaded."""

_NANOS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek small letter mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_COMPONENT = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")
_MAX_NS = 2**63 - 1


class DurationError(ValueError):
    """A value is not a duration; the message is Go's wording, as Ollama answers it."""


def parse_go_duration(text: str) -> int:
    """Nanoseconds of a Go duration string, with Go's `time.ParseDuration` rules and errors."""
    quoted = _go_quote(text)
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if rest == "":
        raise DurationError(f"time: invalid duration {quoted}")
    total = 0.0
    while rest:
        match = _COMPONENT.match(rest)
        whole, frac, unit = match.group(1), match.group(2), match.group(3)
        if whole == "" and not frac:
            raise DurationError(f"time: invalid duration {quoted}")
        if unit == "":
            raise DurationError(f"time: missing unit in duration {quoted}")
        if unit not in _NANOS:
            raise DurationError(f"time: unknown unit {_go_quote(unit)} in duration {quoted}")
        value = int(whole or "0") * _NANOS[unit]
        if frac:
            value += int(frac) * _NANOS[unit] / 10 ** len(frac)
        total += value
        if total > _MAX_NS + 1:
            raise DurationError(f"time: invalid duration {quoted}")
        rest = rest[match.end():]
    nanos = int(total)
    return -nanos if negative else nanos


def parse_keep_alive(value: object) -> float | None:
    """Seconds to keep a model loaded after a request, from a decoded JSON value.

    None means "the server's default"; a negative duration becomes `FOREVER`.
    Raises DurationError with Ollama's message for anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise DurationError("Unsupported type: 'bool'")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise DurationError(f"Unsupported value: {value!r}")
    elif isinstance(value, str):
        seconds = parse_go_duration(value) / 1e9
    else:
        raise DurationError(f"Unsupported type: '{_go_type(value)}'")
    return FOREVER if seconds < 0 else seconds


def parse_env_duration(text: str) -> float:
    """A duration from an environment variable: a Go duration or a whole number of seconds.

    This is OLLAMA_KEEP_ALIVE's rule (unlike the API, a bare integer is accepted there).
    """
    text = text.strip().strip("\"'")
    try:
        seconds = float(int(text))
    except ValueError:
        seconds = parse_go_duration(text) / 1e9
    return FOREVER if seconds < 0 else seconds


def format_go_duration(seconds: float) -> str:
    """Go's `Duration.String()` of a non-negative number of seconds ("5m0s", "1h30m0s", "1.5s")."""
    if seconds < 0:
        return "-1"
    nanos = round(seconds * 1e9)
    if nanos == 0:
        return "0s"
    if nanos < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanos >= size:
                return _trim(nanos / size) + unit
    hours, rem = divmod(nanos, 3_600_000_000_000)
    minutes, rem = divmod(rem, 60_000_000_000)
    text = _trim(rem / 1e9) + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def _trim(number: float) -> str:
    return f"{number:.9f}".rstrip("0").rstrip(".")


def _go_quote(text: str) -> str:
    """Go's `%q`-like quoting, enough for error messages."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _go_type(value: object) -> str:
    """The Go type encoding/json would have decoded `value` into (for Ollama's error text)."""
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    return type(value).__name__
