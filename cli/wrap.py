"""Word wrap for streamed answers, as Ollama's REPL does it on a terminal: a word that would cross
the right edge starts the next line instead.

The answer comes in pieces that may split a word anywhere, so the wrapper holds back the word it
is in until the word ends (a space or a newline) and only then knows where it goes; what it
returns is plain text with newlines, never cursor movements.
"""

from __future__ import annotations

import shutil
import sys
from typing import TextIO

MIN_WIDTH = 10  # narrower than this, wrapping would only mangle the text (Ollama does not wrap either)


class WordWrap:
    """Feed it the pieces of one answer; it returns the text to write, wrapped at `width` columns."""

    def __init__(self, width: int):
        self.width = width
        self.column = 0  # characters already on the current line
        self.word = ""  # the word being read: not written yet
        self.spaces = ""  # blanks after the last word written, written with the next word if it fits

    def feed(self, piece: str) -> str:
        out: list[str] = []
        for ch in piece:
            if ch == "\n":
                self._place(out)
                out.append("\n")
                self.column, self.spaces = 0, ""
            elif ch in " \t":
                self._place(out)
                self.spaces += ch
            else:
                self.word += ch
                if len(self.word) >= self.width:  # longer than any line: break it at the edge
                    self._place(out)
        return "".join(out)

    def flush(self) -> str:
        """The word still held back (the answer ended); trailing blanks are dropped."""
        out: list[str] = []
        self._place(out)
        self.spaces = ""
        return "".join(out)

    def _place(self, out: list[str]) -> None:
        if not self.word:
            return
        lead = self.spaces
        if self.column > 0 and self.column + len(lead) + len(self.word) > self.width:
            out.append("\n")  # the blanks that separated it from the last word end the line unseen
            self.column, lead = 0, ""
        out.append(lead + self.word)
        self.column += len(lead) + len(self.word)
        self.word, self.spaces = "", ""


def wrap(pieces: list[str], width: int) -> str:
    """The whole of `pieces` as WordWrap writes it (for tests and one-off use)."""
    w = WordWrap(width)
    return "".join(w.feed(p) for p in pieces) + w.flush()


def terminal_width(stream: TextIO | None = None) -> int | None:
    """The width to wrap `stream` (default stdout) at, or None when it is not a terminal or too narrow."""
    stream = stream if stream is not None else sys.stdout
    if not getattr(stream, "isatty", lambda: False)():
        return None
    columns = shutil.get_terminal_size().columns
    return columns if columns >= MIN_WIDTH else None
