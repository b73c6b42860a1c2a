"""Errors and warnings of the definition language.

Exception tree (every user-input error of Corral derives from CorralError):

    CorralError                (corral.errors)
     +-- DefinitionError       a Modelfile or TOML definition is invalid; holds every Diagnostic found
     +-- FormatError           an IR value cannot be written in the requested syntax

Diagnostics render the way compilers do, through corral.errors.render (the one style of every
error the CLI prints, hint on its own line):

    PATH:LINE:COL: error: MESSAGE
      7 | PARAMETER temprature 0.2
        |           ^~~~~~~~~~
    hint: did you mean 'temperature'?

Errors are plain data (message, span, hint), so they pickle across the worker-process boundary.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Sequence

from corral.dsl.span import Span
from corral.errors import CorralError, render


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One message about one place in a source file."""

    message: str
    span: Span | None = None
    hint: str | None = None
    severity: Severity = Severity.ERROR
    source_line: str | None = None  # the text of span.line, for the excerpt

    def render(self) -> str:
        """`PATH:LINE:COL: error: MESSAGE`, then the source line with a caret, then the hint."""
        return render(self.message, self.hint, where=str(self.span) if self.span else None,
                      severity=self.severity.value, excerpt=self.excerpt())

    def excerpt(self) -> str:
        """The source line under a line-number gutter, with `^~~~` under the span."""
        if self.span is None or self.source_line is None:
            return ""
        number = str(self.span.line)
        pad = " " * len(number)
        text = self.source_line.expandtabs(1)
        width = 1
        if self.span.end_line == self.span.line and self.span.end_column:
            width = max(1, self.span.end_column - self.span.column)
        width = min(width, max(1, len(text) - self.span.column + 1))
        marker = " " * (self.span.column - 1) + "^" + "~" * (width - 1)
        return f"  {number} | {text}\n  {pad} | {marker}"


class DefinitionError(CorralError):
    """A model definition is invalid. Carries every error found, in source order."""

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        if not diagnostics:
            raise ValueError("DefinitionError needs at least one diagnostic")
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        Exception.__init__(self, self.render())  # message and hint are the first diagnostic's

    def __reduce__(self):
        return (type(self), (self.diagnostics,))

    @property
    def first(self) -> Diagnostic:
        return self.diagnostics[0]

    @property
    def message(self) -> str:
        return self.first.message

    @property
    def path(self) -> str | None:
        return self.first.span.path if self.first.span else None

    @property
    def line(self) -> int | None:
        return self.first.span.line if self.first.span else None

    @property
    def column(self) -> int | None:
        return self.first.span.column if self.first.span else None

    @property
    def hint(self) -> str | None:
        return self.first.hint

    @property
    def excerpt(self) -> str:
        return self.first.excerpt()

    def render(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)


class FormatError(CorralError):
    """A value of the IR has no spelling in the requested syntax."""


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean ...?' hint naming the closest choice, or None when nothing is close."""
    close = difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1, cutoff=0.6)
    if not close:
        return None
    original = {c.lower(): c for c in choices}[close[0]]
    return f"did you mean '{original}'?"
