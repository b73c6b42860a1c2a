"""The Jinja sandboxes chat templates run in, and the one boundary where Jinja's errors are mapped.

A GGUF's chat template is untrusted input, so every template (Hugging Face Jinja, or
Jinja translated from Go) is parsed and rendered in `ImmutableSandboxedEnvironment`: no
underscore attributes, no mutation of the values passed in. Where the stock sandbox
quietly prints a withheld attribute as an empty string, ours fails, so a template probing
for an escape is rejected when it is compiled.

Two environments, because the two kinds were written for different Jinja settings:

* Hugging Face templates expect what `transformers` provides: `trim_blocks` and
  `lstrip_blocks`, loop controls, the `{% generation %}` tag, a `tojson` that keeps
  non-ASCII text and does not HTML-escape, `raise_exception` and `strftime_now`.
* Translated Go templates need Jinja to leave whitespace exactly as written (Go's trim
  markers are already applied) and keep a final newline, plus the `go_*` functions.

Every failure of Jinja or of code it calls becomes a TemplateError here, with the Span of
the template line involved, found from Jinja's rewritten traceback.

Both are capped, so an untrusted template can neither run for long nor make a huge string: a
render stops after MAX_RENDER_SECONDS (checked at every loop iteration, call and operator, so a
loop that prints nothing is stopped too) and at MAX_OUTPUT_CHARS of output; an operation that
would build a value larger than that (`'x' * 10**10`, `~` doubling, `center(10**10)`, a join
of a repeated list, a huge `**`) is refused before it allocates. `range` is the sandbox's own
(at most 100,000 items); recursion stops at Python's recursion limit.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import functools
import json
import re
import time
from types import TracebackType
from collections.abc import Callable
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from corral.compiler.errors import TemplateError
from corral.compiler.gotemplate.runtime import GLOBALS as GO_GLOBALS
from corral.compiler.gotemplate.values import GoExecError
from corral.dsl.span import Span

Where = Callable[[int], Span]  # template line -> Span in the file the template came from
_TEMPLATE_FILE = "<template>"  # the code filename Jinja gives templates made from strings


# The caps of every render: far above any real chat prompt (a whole 128k-token context is ~500k
# characters; chat templates render in milliseconds), far below what would hurt the server.
MAX_OUTPUT_CHARS = 1 << 22
MAX_RENDER_SECONDS = 1.0
_MAX_POWER_BITS = 1 << 16  # `**` results of up to ~20,000 decimal digits
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("corral_template_deadline", default=None)
_WIDE_FORMAT = re.compile(r"\d{8,}")  # a width or precision of 8+ digits in a format string


class TemplateLimit(Exception):
    """A template went past a cap of the sandbox (time, output size, a value's size)."""


def _check_time() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise TemplateLimit(f"the template ran for more than {MAX_RENDER_SECONDS:g} s")


def _check_size(n: int) -> None:
    if n > MAX_OUTPUT_CHARS:
        raise TemplateLimit(f"the template would build a value of {n} items (the limit is {MAX_OUTPUT_CHARS})")


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple, dict)) else 0


def _check_call(name: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a call whose result would be huge, before it allocates."""
    values = list(args) + list(kwargs.values())
    if name == "go_printf" and args:  # a translated Go `printf`: its format is the first argument
        name, target, args = "format", args[0], args[1:]
    if name in _WIDTH_CALLS:
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool):
                _check_size(abs(v))
    if name == "format" or name == "format_map":
        if isinstance(target, str) and _WIDE_FORMAT.search(target):
            raise TemplateLimit("the template formats with a width or precision of 8 or more digits")
        if isinstance(target, str) and "*" in target:  # `%*d`: the width is an argument
            _check_call("center", None, args, kwargs)
    if name == "join":
        items, sep = None, ""
        if isinstance(target, (list, tuple)):  # the join filter: value|join(separator)
            items, sep = target, values[0] if values else ""
        elif isinstance(target, str) and values:  # separator.join(items)
            items, sep = values[0], target
        if isinstance(items, (list, tuple)):
            _check_size(sum(_sized(x) or 8 for x in items) + len(items) * _sized(sep))
    if name == "replace" and len(values) >= 2 and isinstance(target, str):
        old, new = values[0], values[1]
        if isinstance(old, str) and isinstance(new, str):
            count = len(target) + 1 if old == "" else target.count(old)
            _check_size(len(target) + count * len(new))


# Calls whose integer arguments are sizes of what they build.
_WIDTH_CALLS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "indent", "wordwrap", "truncate",
                          "lipsum"})


class _CappedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the caps above, and a withheld attribute an error at once."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_time()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(n, int) and _sized(seq) and not isinstance(seq, dict):
                    _check_size(len(seq) * n)
        elif operator == "+" and _sized(left) and _sized(right):
            _check_size(len(left) + len(right))
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            if left.bit_length() * right > _MAX_POWER_BITS:
                raise TemplateLimit(f"the template computes {left} ** {right}, a number too large")
        elif operator == "%" and isinstance(left, str):
            if _WIDE_FORMAT.search(left):
                raise TemplateLimit("the template formats with a width or precision of 8 or more digits")
            if "*" in left:
                args = right if isinstance(right, tuple) else (right,)
                _check_call("center", None, args, {})
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        _check_time()
        # the sandbox hands str.format over wrapped: its string is the wrapped method's __self__
        bound = getattr(__obj, "__wrapped__", __obj)
        _check_call(getattr(__obj, "__name__", ""), getattr(bound, "__self__", None), args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        # The stock sandbox returns an Undefined, which `|attr` chains turn into a harmless empty
        # string; a template that reaches for an internal is refused outright instead.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe.")

    def iterate(self, iterable: Any) -> Any:
        """Every `{% for %}` iterates through here: the render's deadline is checked each step."""
        for item in iterable:
            _check_time()
            yield item

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            # environment.iterate, not a global name: a template cannot rebind it
            loop.iter = nodes.Call(nodes.EnvironmentAttribute("iterate"), [loop.iter], [], None, None,
                                   lineno=loop.iter.lineno)
        for concat in tree.find_all(nodes.Concat):
            concat.nodes = [nodes.Call(nodes.EnvironmentAttribute("concat_piece"), [n], [], None, None,
                                       lineno=n.lineno) for n in concat.nodes]
        return tree

    def concat_piece(self, value: Any) -> str:
        """One operand of `~`, as text; checked so that repeated doubling stops at the cap."""
        text = str(value)
        _check_size(len(text) * 2)
        return text


def _capped_filter(name: str, f: Callable[..., Any], filtered: bool = True) -> Callable[..., Any]:
    """`f` with the size checks of `name`; a filter's first argument is the value it filters."""
    @functools.wraps(f)
    def capped(*args: Any, **kwargs: Any) -> Any:
        _check_time()
        plain = [a for a in args if not isinstance(a, (jinja2.runtime.Context, jinja2.Environment,
                                                      jinja2.nodes.EvalContext))]
        if not filtered:
            plain.insert(0, None)
        target = plain[0] if plain else None
        _check_call(name, target, tuple(plain[1:]), kwargs)
        return f(*args, **kwargs)
    return capped


def _cap_filters(env: ImmutableSandboxedEnvironment) -> None:
    for name in ("center", "indent", "wordwrap", "truncate", "format", "join", "replace"):
        env.filters[name] = _capped_filter(name, env.filters[name])
    env.globals["lipsum"] = _capped_filter("lipsum", env.globals["lipsum"], filtered=False)


class TemplateRaised(Exception):
    """A template called `raise_exception(...)`: it refuses the conversation it was given."""


def raise_exception(message: str) -> NoReturn:
    """The `raise_exception` global Hugging Face templates call to reject a conversation."""
    raise TemplateRaised(str(message))


def strftime_now(fmt: str) -> str:
    """The `strftime_now` global (current local time), as transformers provides it."""
    return _dt.datetime.now().strftime(str(fmt))


def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
           separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """transformers' `tojson`: plain json.dumps (Jinja's own escapes <, >, & and ')."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


class _GenerationTag(Extension):
    """`{% generation %}...{% endgeneration %}`: transformers marks assistant text with it;
    for prompting the body is simply rendered."""

    tags = {"generation"}  # noqa: RUF012 - Jinja's Extension declares it this way

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _Undefined(jinja2.Undefined):
    """Jinja's lenient Undefined, except that a value the sandbox withheld fails when used at
    all: printing or testing `x.__class__` would otherwise pass silently as an empty string."""

    __slots__ = ()

    def _blocked(self) -> bool:
        return issubclass(self._undefined_exception, jinja2.exceptions.SecurityError)

    def __str__(self) -> str:
        if self._blocked():
            self._fail_with_undefined_error()
        return super().__str__()

    def __bool__(self) -> bool:
        if self._blocked():
            self._fail_with_undefined_error()
        return super().__bool__()

    def __iter__(self) -> Any:
        if self._blocked():
            self._fail_with_undefined_error()
        return super().__iter__()


_COMMON_GLOBALS = {"raise_exception": raise_exception, "strftime_now": strftime_now}


@functools.cache
def hf_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox for Hugging Face Jinja chat templates (transformers' settings)."""
    env = _CappedSandbox(trim_blocks=True, lstrip_blocks=True, autoescape=False,
                         extensions=["jinja2.ext.loopcontrols", _GenerationTag], undefined=_Undefined)
    env.globals.update(_COMMON_GLOBALS)
    _cap_filters(env)
    env.filters["tojson"] = tojson
    return env


@functools.cache
def go_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox for Jinja translated from Go templates (whitespace untouched)."""
    env = _CappedSandbox(keep_trailing_newline=True, autoescape=False,
                         extensions=["jinja2.ext.loopcontrols"], undefined=_Undefined)
    env.globals.update(_COMMON_GLOBALS)
    _cap_filters(env)
    env.globals.update(GO_GLOBALS)
    env.filters["tojson"] = tojson
    return env


@functools.lru_cache(maxsize=256)
def _cached(env: ImmutableSandboxedEnvironment, source: str) -> jinja2.Template:
    return env.from_string(source)


def compile_jinja(env: ImmutableSandboxedEnvironment, source: str, where: Where) -> jinja2.Template:
    """Parse Jinja source in a sandbox; a syntax error becomes a TemplateError at its line."""
    try:
        return _cached(env, source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"invalid Jinja template: {e.message}", where(e.lineno or 1),
                            "check the block tags ({% ... %}) around this line") from e


def _template_line(tb: TracebackType | None) -> int:
    """The template line being rendered when an exception was raised (the last template frame)."""
    line = 1
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILE:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def describe(error: Exception) -> tuple[str, str | None]:
    """The message and hint for an exception raised while rendering."""
    if isinstance(error, TemplateRaised):
        return f"template raised an error: {error}", "the template rejects this conversation"
    if isinstance(error, TemplateLimit):
        return (f"template stopped: {error}",
                f"templates run at most {MAX_RENDER_SECONDS:g} s and make at most {MAX_OUTPUT_CHARS} characters")
    if isinstance(error, (RecursionError, MemoryError)):
        return f"template stopped: {type(error).__name__}", "the template recurses or grows without bound"
    if isinstance(error, jinja2.exceptions.SecurityError):
        return (f"template attempted an unsafe operation: {error}",
                "chat templates run in a sandbox without access to Python internals")
    if isinstance(error, GoExecError):
        return f"template failed: {error}", None
    if isinstance(error, jinja2.TemplateError):
        return f"template failed: {error.message or type(error).__name__}", None
    return f"template failed: {type(error).__name__}: {error}", None


def render_jinja(template: jinja2.Template, context: dict[str, Any], where: Where,
                 hint: str | None = None) -> str:
    """Render in the sandbox, capped in time and size; any failure becomes a TemplateError at the
    template line involved."""
    token = _deadline.set(time.monotonic() + MAX_RENDER_SECONDS)
    try:
        out: list[str] = []
        size = 0
        for piece in template.generate(context):
            size += len(piece)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateLimit(f"the template's output passed {MAX_OUTPUT_CHARS} characters")
            out.append(piece)
            _check_time()
        return "".join(out)
    except TemplateError:
        raise
    except Exception as e:  # an untrusted template may fail in any way; this is the boundary
        message, own_hint = describe(e)
        raise TemplateError(message, where(_template_line(e.__traceback__)), own_hint or hint) from e
    finally:
        _deadline.reset(token)
