"""Errors of the compiler (definition IR -> RuntimeSpec).

Exception tree:

    CorralError                       (corral.errors)
     +-- CompileError                 a definition cannot become a runnable model
          +-- TemplateError           a chat template cannot be translated, parsed or test-rendered
          +-- WeightsError            FROM/ADAPTER names weights that are missing, not GGUF, or unsafe
          |    +-- GGUFError          a file is not a valid GGUF (bad magic, truncated, absurd counts)
          +-- UnknownModelError       FROM names a model that is not in the store

Every CompileError carries a message, an optional Span (the definition line it comes from) and an
optional hint, renders as `PATH:LINE:COL: error: MESSAGE` like the DSL's errors, and pickles.
"""

from __future__ import annotations

from corral.errors import CorralError
from corral.dsl.errors import Diagnostic
from corral.dsl.span import Span


class CompileError(CorralError):
    """A definition cannot be compiled into a runnable model."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        self.message = message
        self.span = span
        self.hint = hint
        Exception.__init__(self, self.render())

    def __reduce__(self):
        return (type(self), (self.message, self.span, self.hint))

    def diagnostic(self, source_line: str | None = None) -> Diagnostic:
        return Diagnostic(self.message, self.span, self.hint, source_line=source_line)

    def render(self) -> str:
        return self.diagnostic().render()


class TemplateError(CompileError):
    """A chat template cannot be translated, parsed or test-rendered."""


class WeightsError(CompileError):
    """Weights named by FROM or ADAPTER are missing, unreadable, not GGUF, or unsafe."""


class GGUFError(WeightsError):
    """A file is not a valid GGUF file."""


class UnknownModelError(CompileError):
    """FROM names a model the store does not have."""
