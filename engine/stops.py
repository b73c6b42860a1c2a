"""Stop strings over streamed text, and UTF-8 decoding of token pieces.

Generated text reaches us one token piece at a time, and neither characters nor stop strings
respect token boundaries: a piece can end in the middle of a UTF-8 sequence, and a stop string
like "\\nUser:" can arrive as "\\n", "User" and ":". So a stream passes through two stages:

- `Utf8Decoder` turns piece bytes into text, holding back an incomplete trailing sequence until
  the bytes that complete it arrive (invalid bytes become U+FFFD rather than an exception: a model
  can emit any byte sequence).
- `StopMatcher` emits text as soon as it cannot be part of a stop string, holds back a suffix that
  might still grow into one, and cuts the stream at the first stop that completes.

"First" means the stop whose last character comes earliest in the text, and among stops ending at
the same place the one that starts earliest. That rule gives the same result however the text is
chunked, which the property tests check: for any chunking, emitted text plus held text equals the
input up to the stop.
"""

from __future__ import annotations

import codecs
from typing import Iterable


class Utf8Decoder:
    """Incremental UTF-8 decoding of token pieces."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, piece: bytes) -> str:
        """The text that `piece` completes; an unfinished trailing sequence waits for more bytes."""
        return self._decoder.decode(piece, final=False)

    def flush(self) -> str:
        """What is left at the end of the stream (an unfinished sequence becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)


def first_stop(text: str, stops: Iterable[str]) -> tuple[int, int] | None:
    """(start, end) of the first stop in `text` by the rule in the module docstring, or None.

    Only each stop's first occurrence can be the answer: a later one ends later.
    """
    best: tuple[int, int] | None = None
    for stop in stops:
        start = text.find(stop)
        if start < 0:
            continue
        end = start + len(stop)
        if best is None or (end, start) < (best[1], best[0]):
            best = (start, end)
    return best


class StopMatcher:
    """Cuts a text stream at the first complete stop string, holding back possible beginnings."""

    def __init__(self, stops: Iterable[str]) -> None:
        # Empty stops would match everywhere; duplicates only cost time.
        self._stops: tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that cut the stream, once one has

    @property
    def held(self) -> str:
        """Text received but not emitted yet, because a stop string may start in it."""
        return self._held

    def push(self, text: str) -> str:
        """Take newly decoded text; return what can be emitted now.

        When a stop completes, `stopped` becomes True and the text before the stop is returned;
        the stop itself and everything after it are dropped, and later pushes return "".
        """
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        found = first_stop(buffer, self._stops)
        if found is not None:
            self._held = ""
            self.stopped = True
            self.matched = buffer[found[0]: found[1]]
            return buffer[: found[0]]
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep:]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The held text, at the end of a stream that no stop cut short."""
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest suffix of `buffer` that is a proper prefix of some stop.

        Holding the longest such suffix (the one starting earliest) keeps every position where a
        stop could still begin.
        """
        for size in range(min(len(buffer), self._longest - 1), 0, -1):
            tail = buffer[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0
