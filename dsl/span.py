"""Source positions: one `Span` runs from the grammar through the IR to every error."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file; lines and columns are 1-based, columns count characters."""

    path: str
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"

    @classmethod
    def at(cls, path: str, text: str, offset: int) -> "Span":
        """The one-character span at `offset` of `text` (offset may be len(text) for end of file)."""
        line = text.count("\n", 0, offset) + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        return cls(path, line, column, line, column + 1)

    @classmethod
    def between(cls, path: str, text: str, start: int, end: int) -> "Span":
        """The span of text[start:end]."""
        first = cls.at(path, text, start)
        last = cls.at(path, text, max(start, end))
        return cls(path, first.line, first.column, last.line, last.column)
