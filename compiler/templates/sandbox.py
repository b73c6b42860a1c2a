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
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
from types import TracebackType
from collections.abc import Callable
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from corral.compiler.errors import TemplateError
from corral.compiler.gotemplate.runtime import GLOBALS as GO_GLOBALS
from corral.compiler.gotemplate.values import GoExecError
from corral.dsl.span import Span

Where = Callable[[int], Span]  # template line -> Span in the file the template came from
_TEMPLATE_FILE = "<template>"  # the code filename Jinja gives templates made from strings


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
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, autoescape=False,
                                        extensions=["jinja2.ext.loopcontrols", _GenerationTag],
                                        undefined=_Undefined)
    env.globals.update(_COMMON_GLOBALS)
    env.filters["tojson"] = tojson
    return env


@functools.cache
def go_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox for Jinja translated from Go templates (whitespace untouched)."""
    env = ImmutableSandboxedEnvironment(keep_trailing_newline=True, autoescape=False,
                                        extensions=["jinja2.ext.loopcontrols"], undefined=_Undefined)
    env.globals.update(_COMMON_GLOBALS)
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
    """Render in the sandbox; any failure becomes a TemplateError at the template line involved."""
    try:
        return template.render(context)
    except TemplateError:
        raise
    except Exception as e:  # an untrusted template may fail in any way; this is the boundary
        message, own_hint = describe(e)
        raise TemplateError(message, where(_template_line(e.__traceback__)), own_hint or hint) from e
