"""The functions a translated Go template calls from Jinja, with Go's semantics.

Jinja's own operators differ from Go's in the corners templates reach: `eq` between a
string and a number is an error in Go, `len` of a string counts bytes, a missing map key is
nil but a missing struct field is an error, and maps range in sorted key order. Each Go
construct is therefore translated to a call of one of these functions (named `go_*` in
the Jinja source). They touch only the plain values of `values` and never look
up Python attributes, so the sandbox's guarantees still hold.
"""

from __future__ import annotations

import datetime as _dt
import urllib.parse
from collections.abc import Callable
from typing import Any

from corral.compiler.gotemplate.fmt import action_text, sprint, sprintf, sprintln
from corral.compiler.gotemplate.values import GoExecError, GoStruct, go_json, type_name


def go_field(value: Any, *names: str) -> Any:
    """`.A.B` on a value: struct fields must exist, map keys may be missing (nil)."""
    for name in names:
        if isinstance(value, GoStruct):
            if name not in value.fields:
                raise GoExecError(f"can't evaluate field {name} in type {type_name(value)}")
            value = value.fields[name]
        elif isinstance(value, dict):
            value = value.get(name)  # Ollama parses with missingkey=zero
        elif value is None:
            raise GoExecError(f"nil pointer evaluating interface {{}}.{name}")
        else:
            raise GoExecError(f"can't evaluate field {name} in type {type_name(value)}")
    return value


def go_index(item: Any, *keys: Any) -> Any:
    """`index x 1 2`: slices and strings by int (strings give bytes), maps by key."""
    for key in keys:
        if isinstance(item, (str, list, tuple)):
            if isinstance(key, bool) or not isinstance(key, int):
                raise GoExecError(f"error calling index: cannot index slice/array with type {type_name(key)}")
            seq: Any = item.encode() if isinstance(item, str) else item
            if not 0 <= key < len(seq):
                raise GoExecError(f"error calling index: index out of range: {key}")
            item = seq[key]
        elif isinstance(item, dict):
            if not isinstance(key, str):
                raise GoExecError(f"error calling index: value has type {type_name(key)}; should be string")
            item = item.get(key)
        elif item is None:
            raise GoExecError("error calling index: index of untyped nil")
        else:
            raise GoExecError(f"error calling index: can't index item of type {type_name(item)}")
    return item


def go_slice(item: Any, *bounds: Any) -> Any:
    """`slice x i j`: sub-slice; on strings the bounds count bytes, as in Go."""
    if item is None:
        raise GoExecError("error calling slice: slice of untyped nil")
    if not isinstance(item, (str, list, tuple)):
        raise GoExecError(f"error calling slice: can't slice item of type {type_name(item)}")
    if len(bounds) > 3 or isinstance(item, str) and len(bounds) > 2:
        raise GoExecError(f"error calling slice: too many slice indexes: {len(bounds)}")
    seq: Any = item.encode() if isinstance(item, str) else item
    idx = [b for b in bounds]
    if any(isinstance(b, bool) or not isinstance(b, int) for b in idx):
        raise GoExecError("error calling slice: cannot index slice/array with nil")
    start = idx[0] if idx else 0
    stop = idx[1] if len(idx) > 1 else len(seq)
    if not 0 <= start <= stop <= len(seq):
        raise GoExecError(f"error calling slice: index out of range: {stop if stop > len(seq) else start}")
    part = seq[start:stop]
    return part.decode("utf-8", errors="replace") if isinstance(item, str) else list(part)


def go_len(item: Any) -> int:
    """`len x`: bytes of a string, elements of a slice or map."""
    if isinstance(item, str):
        return len(item.encode())
    if isinstance(item, (list, tuple, dict)):
        return len(item)
    if item is None:
        raise GoExecError("error calling len: len of nil pointer")
    raise GoExecError(f"error calling len: len of type {type_name(item)}")


def go_range(value: Any) -> list[tuple[Any, Any]]:
    """(key, element) pairs in Go's range order: slices by index, maps by sorted key."""
    if value is None:
        return []  # ranging over nil runs the {{else}} branch, it is not an error
    if isinstance(value, (list, tuple)):
        return list(enumerate(value))
    if isinstance(value, dict):
        return [(k, value[k]) for k in sorted(value)]
    if isinstance(value, int) and not isinstance(value, bool):
        return [(i, i) for i in range(value)]
    raise GoExecError(f"range can't iterate over {action_text(value)}")


def _kind(value: Any) -> str | None:
    """Go's basicKind for comparisons; None for non-basic types and nil."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return None


def go_eq(first: Any, *others: Any) -> bool:
    """`eq a b c`: a equals any of the others; mixing types is an error, nil equals only nil."""
    if not others:
        raise GoExecError("error calling eq: missing argument for comparison")
    for other in others:
        if first is None or other is None:
            if first is None and other is None:
                return True
            continue
        kind = _kind(first)
        if kind != _kind(other):
            raise GoExecError("error calling eq: incompatible types for comparison")
        if kind is None:
            raise GoExecError(f"error calling eq: non-comparable type {type_name(first)}")
        if first == other:
            return True
    return False


def go_ne(a: Any, b: Any) -> bool:
    """`ne a b`."""
    try:
        return not go_eq(a, b)
    except GoExecError as e:
        raise GoExecError(str(e).replace("calling eq", "calling ne")) from None


def _ordered(name: str, a: Any, b: Any) -> None:
    ka, kb = _kind(a), _kind(b)
    if ka in (None, "bool") or kb in (None, "bool"):
        raise GoExecError(f"error calling {name}: invalid type for comparison")
    if ka != kb:
        raise GoExecError(f"error calling {name}: incompatible types for comparison")


def go_lt(a: Any, b: Any) -> bool:
    """`lt a b`."""
    _ordered("lt", a, b)
    return a < b


def go_le(a: Any, b: Any) -> bool:
    """`le a b`."""
    _ordered("le", a, b)
    return a <= b


def go_gt(a: Any, b: Any) -> bool:
    """`gt a b`."""
    _ordered("gt", a, b)
    return a > b


def go_ge(a: Any, b: Any) -> bool:
    """`ge a b`."""
    _ordered("ge", a, b)
    return a >= b


def go_printf(fmt: Any, *args: Any) -> str:
    """`printf`: fmt.Sprintf, whose format must be a string."""
    if not isinstance(fmt, str):
        raise GoExecError(f"error calling printf: wrong type for value; expected string; got {type_name(fmt)}")
    return sprintf(fmt, *args)


def _joined(args: tuple[Any, ...]) -> str:
    """How Go's html/urlquery turn their arguments into one string."""
    return args[0] if len(args) == 1 and isinstance(args[0], str) else sprint(*args)


def go_html(*args: Any) -> str:
    """`html`: Go's HTMLEscapeString."""
    table = {"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}
    return "".join(table.get(c, c) for c in _joined(args))


def go_urlquery(*args: Any) -> str:
    """`urlquery`: Go's url.QueryEscape."""
    return urllib.parse.quote_plus(_joined(args), safe="")


def go_current_date(*_: Any) -> str:
    """Ollama's `currentDate`: today as YYYY-MM-DD (arguments are ignored)."""
    return _dt.date.today().isoformat()


def go_yesterday_date(*_: Any) -> str:
    """Ollama's `yesterdayDate`."""
    return (_dt.date.today() - _dt.timedelta(days=1)).isoformat()


GLOBALS: dict[str, Callable[..., Any]] = {
    "go_str": action_text, "go_field": go_field, "go_index": go_index, "go_slice": go_slice,
    "go_len": go_len, "go_range": go_range, "go_eq": go_eq, "go_ne": go_ne, "go_lt": go_lt,
    "go_le": go_le, "go_gt": go_gt, "go_ge": go_ge, "go_print": sprint, "go_println": sprintln,
    "go_printf": go_printf, "go_json": go_json, "go_html": go_html, "go_urlquery": go_urlquery,
    "go_current_date": go_current_date, "go_yesterday_date": go_yesterday_date,
}
