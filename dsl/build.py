"""Statements -> the validated IR. Shared by the Modelfile and TOML front ends.

The builder checks what each command means (known parameter, typed and in range, valid role,
semver), collects every error and warning with its span, and builds the frozen IR at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from pydantic import ValidationError

from corral.dsl import parameters as P
from corral.dsl.errors import DefinitionError, Diagnostic, Severity, did_you_mean
from corral.dsl.ir import ROLES, SEMVER, Message, ModelDefinition, Parameter, Text
from corral.dsl.span import Span

TextField = Literal["template", "system", "requires", "draft", "renderer", "parser"]
_NOT_YET = {"renderer": "RENDERER"}  # PARSER and DRAFT are checked and used by the compiler


@dataclass(frozen=True, slots=True)
class Parsed:
    """A definition parsed without error, with its warnings."""

    definition: ModelDefinition
    warnings: tuple[Diagnostic, ...]
    path: str
    syntax: Literal["modelfile", "toml"]


class Builder:
    """Accumulates commands in source order and reports every problem at once."""

    def __init__(self, path: str, lines: Sequence[str], syntax: Literal["modelfile", "toml"]):
        self.path = path
        self.lines = lines
        self.syntax = syntax
        self.diagnostics: list[Diagnostic] = []
        self._from: Text | None = None
        self._params: dict[str, Parameter] = {}
        self._texts: dict[str, Text] = {}
        self._adapters: list[Text] = []
        self._projector: Text | None = None
        self._licenses: list[Text] = []
        self._messages: list[Message] = []
        # Set when a FROM was written but broken, so "no FROM" is not reported on top of it.
        self.from_attempted = False

    # -- reporting ------------------------------------------------------------------------------
    def _line(self, span: Span | None) -> str | None:
        if span is None or not (0 < span.line <= len(self.lines)):
            return None
        return self.lines[span.line - 1]

    def error(self, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(message, span, hint, Severity.ERROR, self._line(span)))

    def warn(self, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(message, span, hint, Severity.WARNING, self._line(span)))

    def extend(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics.extend(diagnostics)

    # -- commands -------------------------------------------------------------------------------
    def set_from(self, value: str, span: Span, comments: tuple[str, ...] = ()) -> None:
        self.from_attempted = True
        if not value.strip():
            self.error("FROM needs a value", span, "name a GGUF file, a model, or a blob digest")
            return
        if self._from is not None and self._projector is None and _names_a_file(value):
            # Ollama's spelling of a vision model: the second FROM names its projector (mmproj)
            # file; the compiler checks that the file is one.
            self._projector = self._text(value, span, comments)
            return
        if self._from is not None:
            self.warn("FROM given more than once; the last one is used", span)
        self._from = self._text(value, span, comments)

    def set_text(self, field: TextField, value: str, span: Span, comments: tuple[str, ...] = ()) -> None:
        keyword = field.upper()
        if field == "requires":
            version = value[1:] if value.startswith("v") else value
            if not SEMVER.match(version):
                self.error(f"requires must be a valid semantic version (e.g. 0.5.0), got {value!r}", span)
                return
            value = version
        if field in _NOT_YET:
            self.warn(f"{keyword} is accepted but Corral does not act on it yet", span)
        if field in self._texts:
            self.warn(f"{keyword} given more than once; the last one wins", span)
        text = self._text(value, span, comments)
        if text is not None:
            self._texts[field] = text

    def add_adapter(self, value: str, span: Span, comments: tuple[str, ...] = ()) -> None:
        if not value.strip():
            self.error("ADAPTER needs a value", span, "name a LoRA adapter GGUF file")
            return
        text = self._text(value, span, comments)
        if text is not None:
            self._adapters.append(text)

    def set_projector(self, value: str, span: Span, comments: tuple[str, ...] = ()) -> None:
        if not value.strip():
            self.error("PROJECTOR needs a value", span, "name a multimodal projector (mmproj) GGUF file")
            return
        if self._projector is not None:
            self.warn("PROJECTOR given more than once; the last one is used", span)
        self._projector = self._text(value, span, comments)

    def add_license(self, value: str, span: Span, comments: tuple[str, ...] = ()) -> None:
        text = self._text(value, span, comments)
        if text is not None:
            self._licenses.append(text)

    def add_message(self, role: str, content: str, role_span: Span, span: Span,
                    comments: tuple[str, ...] = ()) -> None:
        if role not in ROLES:
            self.error(f"invalid message role {role!r}", role_span,
                       did_you_mean(role, ROLES) or f"roles are {', '.join(ROLES)}")
            return
        try:
            self._messages.append(Message(role=role, content=content, span=span, comments=comments))  # type: ignore[arg-type]
        except ValidationError as e:
            self.error(_first_error(e), span)

    def add_parameter(self, name: str, raw: object, name_span: Span, value_span: Span,
                      comments: tuple[str, ...] = (), *, as_text: bool, key: str | None = None) -> None:
        """Add `name` with `raw` (text from a Modelfile when as_text, else a TOML/JSON value)."""
        label = key or f"parameter {name!r}"
        if name in P.DEPRECATED:
            self.warn(f"parameter {name!r} is deprecated and ignored", name_span)
            return
        spec = P.PARAMETERS.get(name)
        if spec is None:
            self.error(f"unknown parameter {name!r}", name_span,
                       did_you_mean(name, P.PARAMETERS) or "see `corral check --parameters` for the list")
            return
        try:
            value = P.parse_text(spec, raw) if as_text and isinstance(raw, str) else P.coerce(spec, raw)
        except P.ParamValueError as e:
            prefix = f"{key}: " if key else f"parameter {name!r}: "
            self.error(prefix + str(e), value_span, f"{name} is {P.kind(spec)}: {spec.help}")
            return
        old = self._params.get(name)
        if old is not None and isinstance(value, tuple) and isinstance(old.value, tuple):
            value = old.value + value
        elif old is not None:
            self.warn(f"{label} is set more than once; the last value wins", name_span)
        span = Span(self.path, name_span.line, name_span.column, value_span.end_line, value_span.end_column)
        self._params[name] = Parameter(name=name, value=value, span=span,
                                       comments=(old.comments if old else ()) + comments)

    def _text(self, value: str, span: Span, comments: tuple[str, ...]) -> Text | None:
        try:
            return Text(value=value, span=span, comments=comments)
        except ValidationError as e:
            self.error(_first_error(e), span)
            return None

    # -- result ---------------------------------------------------------------------------------
    def finish(self, trailing_comments: tuple[str, ...] = (), file_span: Span | None = None) -> Parsed:
        """The IR, or DefinitionError listing every error found (warnings ride along)."""
        if self._from is None and not self.from_attempted:
            where = file_span or Span(self.path, 1, 1, 1, 1)
            hint = ("add a line such as `FROM ./model.gguf` or `FROM llama3.2`" if self.syntax == "modelfile"
                    else 'add a key such as `from = "./model.gguf"`')
            self.error("no FROM: a definition must say where its weights come from", where, hint)
        errors = [d for d in self.diagnostics if d.severity is Severity.ERROR]
        ordered = sorted(self.diagnostics, key=_position)
        if errors:
            raise DefinitionError(sorted(errors, key=_position))
        assert self._from is not None
        t = self._texts
        definition = ModelDefinition(
            from_=self._from, parameters=tuple(self._params.values()),
            template=t.get("template"), system=t.get("system"), requires=t.get("requires"),
            draft=t.get("draft"), renderer=t.get("renderer"), parser=t.get("parser"),
            adapters=tuple(self._adapters), projector=self._projector, licenses=tuple(self._licenses),
            messages=tuple(self._messages), trailing_comments=trailing_comments,
        )
        return Parsed(definition, tuple(ordered), self.path, self.syntax)


def _position(d: Diagnostic) -> tuple[int, int]:
    return (d.span.line, d.span.column) if d.span else (0, 0)


def _first_error(e: ValidationError) -> str:
    return str(e.errors()[0]["msg"]).removeprefix("Value error, ")


def _names_a_file(value: str) -> bool:
    """Whether a FROM value is a path to a GGUF file rather than a model's name."""
    v = value.strip()
    return v.lower().endswith(".gguf") or v.startswith(("./", "../", "/", "~"))
