"""Where each key of a TOML document is written, and which comments go with it.

tomllib returns values without positions or comments. This scanner walks the document's text
once (strings, arrays and inline tables lexed as TOML does, so a `#` inside a string is not a
comment) and records:

- for each key path, e.g. ("parameters", "temperature") or ("messages", 1, "role"), where its
  value starts. Keys inside inline tables are not mapped; lookups fall back to the nearest parent.
- each comment with the key, or element of a key's array, that it belongs to: a comment on a
  line of its own belongs to the next key or element below it (table headers pass it on), one
  after a value on the same line to that value. Comments after the last key are the document's
  trailing comments. This is the Modelfile's rule, "a comment goes with the command that follows".
"""

from __future__ import annotations

import re

KeyPath = tuple[str | int, ...]

_DOTTED = r'(?:[A-Za-z0-9_-]+|"[^"\n]*"|\'[^\'\n]*\')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"\n]*"|\'[^\'\n]*\'))*'
_KEY = re.compile(r"^(\s*)(" + _DOTTED + r")\s*=\s*")
_HEADER = re.compile(r"\[\[?\s*(" + _DOTTED + r")\s*\]\]?")
_PART = re.compile(r'[A-Za-z0-9_-]+|"[^"\n]*"|\'[^\'\n]*\'')
_SCALAR_END = re.compile(r"[,\]}\n#]")


def _parts(dotted: str) -> list[str]:
    return [p.strip("\"'") for p in _PART.findall(dotted)]


class Locations:
    """Key path -> (line, column) of its value (1-based), and the comments of each key path."""

    def __init__(self, text: str):
        self._at: dict[KeyPath, tuple[int, int]] = {}
        self._notes: list[tuple[KeyPath, str]] = []  # (owner, comment) in document order
        self._pending: list[str] = []
        self._last: KeyPath = ()
        self._text = text
        self._scan()
        self.trailing_comments: tuple[str, ...] = tuple(self._pending)

    def find(self, path: KeyPath) -> tuple[int, int]:
        """Position of `path`'s value, or of its nearest mapped parent, or 1:1."""
        for n in range(len(path), 0, -1):
            if path[:n] in self._at:
                return self._at[path[:n]]
        return (1, 1)

    def comments(self, path: KeyPath, *, below: bool = True) -> tuple[str, ...]:
        """The comments of `path` and (unless below=False) of every key or element under it."""
        n = len(path)
        return tuple(c for owner, c in self._notes
                     if owner == path or (below and owner[:n] == path and len(owner) > n))

    # -- scanning -------------------------------------------------------------------------------
    def _own(self, path: KeyPath) -> None:
        """`path` starts here: the comments above it are its own."""
        self._notes.extend((path, c) for c in self._pending)
        self._pending = []
        self._last = path

    def _comment(self, pos: int, inline: bool) -> int:
        end = self._text.find("\n", pos)
        end = len(self._text) if end < 0 else end
        text = self._text[pos:end].removesuffix("\r")
        if inline and self._last:
            self._notes.append((self._last, text))
        else:
            self._pending.append(text)
        return end

    def _line_col(self, pos: int) -> tuple[int, int]:
        start = self._text.rfind("\n", 0, pos) + 1
        return self._text.count("\n", 0, pos) + 1, pos - start + 1

    def _scan(self) -> None:
        text = self._text
        table: KeyPath = ()
        counts: dict[KeyPath, int] = {}
        pos = 0
        while pos < len(text):
            line_start = pos
            while pos < len(text) and text[pos] in " \t\r":
                pos += 1
            if pos >= len(text):
                break
            ch = text[pos]
            if ch == "\n":
                pos += 1
                continue
            if ch == "#":
                pos = self._comment(pos, inline=False)
                continue
            header = _HEADER.match(text, pos) if ch == "[" else None
            if header is not None:
                name = tuple(_parts(header.group(1)))
                line, col = self._line_col(pos)
                if text.startswith("[[", pos):
                    index = counts.get(name, 0)
                    counts[name] = index + 1
                    table = name + (index,)
                    self._at.setdefault(table, (line, col + 2))
                else:
                    table = name
                    self._at.setdefault(table, (line, col + 1))
                self._last = ()  # a comment after a header goes with what follows
                pos = self._rest_of_line(header.end())
                continue
            eol = text.find("\n", line_start)
            eol = len(text) if eol < 0 else eol
            m = _KEY.match(text[line_start:eol])
            if not m:  # not TOML tomllib accepted; nothing to map on this line
                pos = eol
                continue
            path = table + tuple(_parts(m.group(2)))
            self._at.setdefault(path, (self._line_col(line_start)[0], m.end() + 1))
            self._own(path)
            pos = self._value(line_start + m.end(), path)
            self._last = path  # a comment after the value goes with the key
            pos = self._rest_of_line(pos)

    def _rest_of_line(self, pos: int) -> int:
        """Skip to the end of the line, taking an inline comment there."""
        text = self._text
        while pos < len(text) and text[pos] != "\n":
            if text[pos] == "#":
                return self._comment(pos, inline=True)
            pos += 1
        return pos

    def _blank(self, pos: int) -> int:
        """Skip whitespace, newlines and comments (inside an array)."""
        text = self._text
        while pos < len(text):
            ch = text[pos]
            if ch == "#":
                line_start = text.rfind("\n", 0, pos) + 1
                pos = self._comment(pos, inline=text[line_start:pos].strip(" \t,[") != "")
            elif ch in " \t\r\n":
                pos += 1
            else:
                break
        return pos

    def _value(self, pos: int, path: KeyPath | None) -> int:
        """Skip one value starting at `pos`; the elements of an array under `path` are recorded."""
        text = self._text
        if pos >= len(text):
            return pos
        ch = text[pos]
        if ch in "\"'":
            return _skip_string(text, pos)
        if ch == "[":
            return self._array(pos, path)
        if ch == "{":
            return self._inline_table(pos)
        m = _SCALAR_END.search(text, pos)
        return len(text) if m is None else m.start()

    def _array(self, pos: int, path: KeyPath | None) -> int:
        text = self._text
        pos += 1
        index = 0
        while True:
            pos = self._blank(pos)
            if pos >= len(text):
                return pos
            if text[pos] == "]":
                return pos + 1
            if text[pos] == ",":
                pos += 1
                continue
            if path is not None:
                self._own(path + (index,))
            index += 1
            pos = self._value(pos, None)

    def _inline_table(self, pos: int) -> int:
        text = self._text
        pos += 1
        while pos < len(text) and text[pos] != "}":
            if text[pos] in "\"'":
                pos = _skip_string(text, pos)
            elif text[pos] in "[{":
                pos = self._value(pos, None)
            else:
                pos += 1
        return pos + 1


def _skip_string(text: str, pos: int) -> int:
    """The position after the string (basic, literal, or either multi-line kind) at `pos`."""
    quote = text[pos]
    if text.startswith(quote * 3, pos):
        p = pos + 3
        while p < len(text):
            if quote == '"' and text[p] == "\\":
                p += 2
            elif text.startswith(quote * 3, p):
                end = p + 3
                while end < len(text) and end - p < 5 and text[end] == quote:
                    end += 1  # up to two quotes of the value may touch the closing ones
                return end
            else:
                p += 1
        return len(text)
    p = pos + 1
    while p < len(text) and text[p] != quote and text[p] != "\n":
        p += 2 if quote == '"' and text[p] == "\\" else 1
    return p + 1
