"""Waiting for what another thread or process does (file events, background pulls): poll a condition
until it holds or a deadline passes. Deadlines are generous and never asserted on."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def until(check: Callable[[], T], timeout: float = 60.0, step: float = 0.02) -> T:
    """Poll `check()` until it is truthy or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
