"""How Go prints template values: `{{ x }}`, `print`, `println` and `printf`.

A translated template must produce the same bytes Go would, so numbers, nil, booleans and
collections are formatted the way Go's `fmt` package formats them (`%v` of a float64 is
`1e+06`, not `1000000.0`), values whose Go types have a `String()` method print through
it (JSON for tools and arguments), and `printf` reports bad verbs inline (`%!d(string=x)`)
instead of failing, as Go does.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from corral.compiler.gotemplate.values import GoJsonList, GoMap, GoStruct, PropertyType, go_json, type_name


def float_v(value: float) -> str:
    """`%v` of a float64: shortest digits, exponent form below 1e-4 or from 1e6 up (Go's %g rule)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exponent)  # value = 0.DIGITS x 10^point
    lead = "-" if sign else ""
    exp = point - 1
    if exp < -4 or exp >= 6:  # strconv's %g with shortest precision decides on precision 6
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{lead}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{lead}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return lead + digits + "0" * (point - len(digits))
    return f"{lead}{digits[:point]}.{digits[point:]}"


def value_v(value: Any) -> str:
    """`%v` of any template value."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return float_v(value)
    if isinstance(value, str):
        return value
    if isinstance(value, PropertyType):
        return str(value)
    if isinstance(value, (GoStruct, GoMap, GoJsonList)):
        return go_json(value)  # these Go types print through a JSON String() method
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{value_v(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(value_v(v) for v in value) + "]"
    return str(value)


def action_text(value: Any) -> str:
    """What `{{ pipeline }}` writes: like %v, but a nil result is `<no value>`."""
    return "<no value>" if value is None else value_v(value)


def sprint(*args: Any) -> str:
    """fmt.Sprint: a space between operands when neither side is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(value_v(arg))
    return "".join(out)


def sprintln(*args: Any) -> str:
    """fmt.Sprintln: always a space between operands, then a newline."""
    return " ".join(value_v(a) for a in args) + "\n"


_VERB = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:\.(\*|\d*))?(.)", re.S)


def _bad(verb: str, arg: Any) -> str:
    return f"%!{verb}(<nil>)" if arg is None else f"%!{verb}({type_name(arg)}={value_v(arg)})"


def _pad(text: str, flags: str, width: int | None, numeric: bool = False) -> str:
    if width is None or len(text) >= width:
        return text
    if "-" in flags:
        return text + " " * (width - len(text))
    if "0" in flags and numeric:
        sign = text[0] if text[:1] in "+-" else ""
        return sign + "0" * (width - len(text)) + text[len(sign):]
    return " " * (width - len(text)) + text


def escaped(text: str, named: dict[str, str], *, hex_ascii: bool) -> str:
    """`text` with the `named` characters replaced and the other non-printable ones escaped as
    \\uXXXX or \\UXXXXXXXX (ASCII ones as \\xXX with `hex_ascii`, as Go writes them)."""
    out = []
    for c in text:
        if c in named:
            out.append(named[c])
        elif c.isprintable():
            out.append(c)
        else:
            out.append(f"\\x{ord(c):02x}" if hex_ascii and ord(c) < 0x80 else
                       f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
    return "".join(out)


def _quote(text: str) -> str:
    """strconv.Quote: double quotes, Go escapes for the non-printable."""
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "\v": "\\v", "\\": "\\\\", '"': '\\"'}
    return '"' + escaped(text, named, hex_ascii=True) + '"'


def _one(verb: str, flags: str, precision: int | None, arg: Any) -> str | None:
    """Format one operand, or None when the verb does not apply to its type."""
    is_int = isinstance(arg, int) and not isinstance(arg, bool)
    if verb == "v":
        return value_v(arg)
    if verb == "s":
        if isinstance(arg, (str, GoStruct, GoMap, GoJsonList, PropertyType, list, dict)):
            text = value_v(arg)
            return text if precision is None else text[:precision]
        return None
    if verb == "q":
        return _quote(arg) if isinstance(arg, str) else f"'{chr(arg)}'" if is_int else None
    if verb == "t":
        return ("true" if arg else "false") if isinstance(arg, bool) else None
    if verb in "dxXobc" and is_int:
        sign = "+" if "+" in flags and arg >= 0 else ""
        body = {"d": str(abs(arg)), "x": format(abs(arg), "x"), "X": format(abs(arg), "X"),
                "o": format(abs(arg), "o"), "b": format(abs(arg), "b"), "c": ""}[verb]
        if verb == "c":
            return chr(arg)
        prefix = {"x": "0x", "X": "0X", "o": "0", "b": ""}.get(verb, "") if "#" in flags else ""
        return ("-" if arg < 0 else sign) + prefix + body
    if verb in "xX" and isinstance(arg, str):
        text = arg.encode().hex()
        return text.upper() if verb == "X" else text
    if verb in "eEfFgG" and isinstance(arg, float):
        sign = "+" if "+" in flags and arg >= 0 else ""
        if verb in "gG" and precision is None:
            text = float_v(arg)
            return sign + (text.upper() if verb == "G" else text)
        # Python's fixed and exponent forms match Go's (two exponent digits at least).
        return sign + format(arg, f".{6 if precision is None else precision}{verb}")
    return None


def sprintf(fmt: str, *args: Any) -> str:
    """fmt.Sprintf for the verbs templates use (%s %v %d %q %t %f %e %g %x %c %%, widths, `*`)."""
    out: list[str] = []
    position = 0
    used = 0
    for match in _VERB.finditer(fmt):
        out.append(fmt[position:match.start()])
        position = match.end()
        flags, width_text, precision_text, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        width = precision = None
        if width_text == "*":
            if used < len(args) and isinstance(args[used], int):
                width = args[used]
                if width < 0:
                    flags, width = flags + "-", -width
            else:
                out.append("%!(BADWIDTH)")
            used += 1
        elif width_text:
            width = int(width_text)
        if precision_text == "*":
            precision = args[used] if used < len(args) and isinstance(args[used], int) else None
            used += 1
        elif precision_text is not None:
            precision = int(precision_text or "0")
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[used]
        used += 1
        text = _one(verb, flags, precision, arg)
        if text is None:
            out.append(_bad(verb, arg))
            continue
        numeric = verb in "dxXobeEfFgG" and not isinstance(arg, str)
        out.append(_pad(text, flags, width, numeric))
    out.append(fmt[position:])
    if used < len(args):
        extra = ", ".join("<nil>" if a is None else f"{type_name(a)}={value_v(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
