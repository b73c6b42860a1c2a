"""Where each key of a TOML document is written, so errors can name a line and column.

tomllib returns values without positions. This scanner follows the document's tables, arrays of
tables and `key = value` lines (skipping the insides of multi-line strings and arrays) and maps
each key path, e.g. ("parameters", "temperature") or ("messages", 1, "role"), to where its value
starts. Keys inside inline tables are not mapped; lookups fall back to the nearest parent.
"""

from __future__ import annotations

import re

KeyPath = tuple[str | int, ...]

_KEY = re.compile(r'^(\s*)((?:[A-Za-z0-9_-]+|"[^"\n]*"|\'[^\'\n]*\')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"\n]*"|\'[^\'\n]*\'))*)\s*=\s*')
_PART = re.compile(r'[A-Za-z0-9_-]+|"[^"\n]*"|\'[^\'\n]*\'')


def _parts(dotted: str) -> list[str]:
    return [p.strip("\"'") for p in _PART.findall(dotted)]


class Locations:
    """Key path -> (line, column) of its value (1-based)."""

    def __init__(self, text: str):
        self._at: dict[KeyPath, tuple[int, int]] = {}
        self._scan(text.split("\n"))

    def find(self, path: KeyPath) -> tuple[int, int]:
        """Position of `path`'s value, or of its nearest mapped parent, or 1:1."""
        for n in range(len(path), 0, -1):
            if path[:n] in self._at:
                return self._at[path[:n]]
        return (1, 1)

    def _scan(self, lines: list[str]) -> None:
        table: KeyPath = ()
        counts: dict[KeyPath, int] = {}
        skip_until: str | None = None
        depth = 0
        for number, line in enumerate(lines, start=1):
            if skip_until is not None:
                if skip_until in line:
                    skip_until = None
                continue
            if depth > 0:
                depth += _bracket_delta(line)
                continue
            stripped = line.strip()
            if stripped.startswith("[["):
                name = tuple(_parts(stripped[2:stripped.find("]]")]))
                index = counts.get(name, 0)
                counts[name] = index + 1
                table = name + (index,)
                self._at.setdefault(table, (number, line.find("[[") + 3))
                continue
            if stripped.startswith("["):
                table = tuple(_parts(stripped[1:stripped.find("]")]))
                self._at.setdefault(table, (number, line.find("[") + 2))
                continue
            m = _KEY.match(line)
            if not m:
                continue
            path = table + tuple(_parts(m.group(2)))
            self._at.setdefault(path, (number, m.end() + 1))
            rest = line[m.end():]
            for quote in ('"""', "'''"):
                if rest.startswith(quote) and rest.count(quote) == 1:
                    skip_until = quote
            if rest.startswith("["):
                depth = _bracket_delta(rest)


def _bracket_delta(text: str) -> int:
    """Net `[` minus `]` outside simple strings (enough to skip multi-line arrays)."""
    delta, quote = 0, ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch == "[":
            delta += 1
        elif ch == "]":
            delta -= 1
    return delta
