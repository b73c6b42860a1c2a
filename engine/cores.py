"""Busy workers share the CPU cores instead of oversubscribing them.

Each worker runs llama.cpp with as many threads as there are cores, and llama.cpp's threads meet
at a barrier after every graph node. Two busy workers with all cores each put twice as many
spinning threads as cores on the machine, and every barrier waits on a descheduled thread: on 2
cores two busy models together made 0.21x of what one made alone. So the workers of one server
share a small board in shared memory: each busy worker stamps its seat with the time of its last
step, and before each step it counts the seats stamped within `BUSY_WINDOW_S` and takes its share
of the cores (`threads_for`), set at run time with llama_set_n_threads. A worker that goes idle
or dies stops stamping, and the others take its cores back within the window.

Only the server process creates the board (`CoreBoard`); workers get it through their config.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import threading
import time
from typing import Any

SEATS = 64  # workers of one server at once (max_loaded_models is far smaller)
BUSY_WINDOW_S = 0.25  # a worker that has not stepped for this long counts as idle


def threads_for(cores: int, busy: int, rank: int, wanted: int | None = None) -> int:
    """Threads for the busy worker of `rank` (0-based, by seat) among `busy` on `cores` cores.

    The cores are split evenly, the remainder going to the lowest ranks; never below one thread,
    and never above `wanted` (the model's num_thread, when set)."""
    busy = max(busy, 1)
    share = cores // busy + (1 if rank % busy < cores % busy else 0)
    share = max(share, 1)
    return min(share, wanted) if wanted else share


class CoreBoard:
    """Seats in shared memory, one per worker, stamped with the time of its last busy step."""

    def __init__(self, seats: int = SEATS) -> None:
        self._stamps: Any = multiprocessing.get_context("spawn").Array(ctypes.c_double, seats, lock=False)
        self._taken: set[int] = set()
        self._lock = threading.Lock()

    def claim(self) -> int:
        """A free seat for a new worker (the stalest one when all are taken)."""
        with self._lock:
            free = [i for i in range(len(self._stamps)) if i not in self._taken]
            seat = free[0] if free else min(range(len(self._stamps)), key=lambda i: self._stamps[i])
            self._taken.add(seat)
            self._stamps[seat] = 0.0
            return seat

    def release(self, seat: int) -> None:
        with self._lock:
            self._taken.discard(seat)
            self._stamps[seat] = 0.0

    def seat(self, seat: int) -> "Seat":
        """What a worker needs: picklable into a spawned process."""
        return Seat(self._stamps, seat)


class Seat:
    """A worker's view of the board: stamp its own seat, count the busy ones."""

    def __init__(self, stamps: Any, index: int) -> None:
        self._stamps = stamps
        self.index = index

    def __getstate__(self) -> tuple[Any, int]:
        return self._stamps, self.index

    def __setstate__(self, state: tuple[Any, int]) -> None:
        self._stamps, self.index = state

    def busy_step(self) -> tuple[int, int]:
        """Stamp this seat busy now; returns (busy workers, this worker's rank among them)."""
        now = time.monotonic()
        stamps = self._stamps
        stamps[self.index] = now
        busy = rank = 0
        for i, stamp in enumerate(stamps[:]):
            if now - stamp < BUSY_WINDOW_S:
                if i < self.index:
                    rank += 1
                busy += 1
        return busy, rank

    def idle(self) -> None:
        self._stamps[self.index] = 0.0
