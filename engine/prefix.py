"""Prefix sharing over the shared KV pool: which cached tokens a new prompt can reuse, and cells.

In llama.cpp's unified KV cache a cell holds one token's keys and values and the set of sequence
ids that see it. `llama_memory_seq_cp(src, dst, 0, n)` adds `dst` to the cells of `src`'s first
`n` positions without copying data, so two sequences whose prompts start alike hold that start
once. The batch loop asks this module two things:

- which sequence (running or idle) caches the longest prefix of a new prompt (`longest_prefix`);
- how many cells the pool really uses once cells are shared (`CellLedger`): counting every
  sequence's tokens would count a shared system prompt once per sequence and stall admission.

The bounded cache of recent prefixes is the idle sequences themselves: a finished request's
tokens stay in its sequence until the pool needs the cells (least recently used first).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence, TypeVar

T = TypeVar("T")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists.

    A binary search over slice comparisons, which run in C: a 1,500-token system prompt is
    compared against every cached sequence on each admission, and a Python loop over tokens
    would cost more than the decode step it saves."""
    n = min(len(a), len(b))
    if n == 0 or a[0] != b[0]:
        return 0
    if a[:n] == b[:n]:
        return n
    lo, hi = 1, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def longest_prefix(tokens: Sequence[int], cached: Iterable[tuple[T, Sequence[int]]]) -> tuple[T | None, int]:
    """The owner whose cached tokens share the longest prefix with `tokens`, and its length."""
    best: T | None = None
    length = 0
    for owner, held in cached:
        n = common_prefix(held, tokens)
        if n > length:
            best, length = owner, n
    return best, length


class CellLedger:
    """The KV cells each sequence sees, mirroring llama.cpp's unified cache.

    Every decoded token takes a fresh cell id; `copy` shares a prefix of ids with another
    sequence, and a cell is free again when no sequence sees it. Costs are per token changed,
    never per token held, so the step loop can keep it exact at every step."""

    def __init__(self, n_seqs: int) -> None:
        self._cells: list[list[int]] = [[] for _ in range(n_seqs)]
        self._refs: Counter[int] = Counter()
        self._next = 0

    @property
    def used(self) -> int:
        """Cells some sequence still sees."""
        return len(self._refs)

    def held(self, seq: int) -> int:
        return len(self._cells[seq])

    def append(self, seq: int, n: int) -> None:
        """`n` tokens decoded at the end of `seq`: new cells."""
        ids = range(self._next, self._next + n)
        self._next += n
        self._cells[seq].extend(ids)
        self._refs.update(ids)

    def truncate(self, seq: int, keep: int) -> None:
        """`seq` forgets its positions from `keep` on (llama_memory_seq_rm(seq, keep, -1))."""
        self.remove(seq, keep, len(self._cells[seq]))

    def remove(self, seq: int, p0: int, p1: int) -> None:
        """`seq` forgets positions [p0, p1) and those after move down (llama_memory_seq_rm, then
        llama_memory_seq_add of the rest: a context shift)."""
        cells = self._cells[seq]
        for cell in cells[p0:p1]:
            left = self._refs[cell] - 1
            if left:
                self._refs[cell] = left
            else:
                del self._refs[cell]
        del cells[p0:p1]

    def private(self, seq: int, p0: int) -> bool:
        """Whether no other sequence sees any of `seq`'s cells from position `p0` on."""
        return all(self._refs[cell] == 1 for cell in self._cells[seq][p0:])

    def copy(self, src: int, dst: int, n: int) -> None:
        """`dst` (emptied first) sees the first `n` cells of `src` (llama_memory_seq_cp)."""
        self.truncate(dst, 0)
        shared = self._cells[src][:n]
        self._cells[dst].extend(shared)
        self._refs.update(shared)

    def distinct(self, seqs: Iterable[int]) -> int:
        """Cells seen by any of `seqs` (for statistics; costs a pass over their cells)."""
        cells: set[int] = set()
        for seq in seqs:
            cells.update(self._cells[seq])
        return len(cells)
