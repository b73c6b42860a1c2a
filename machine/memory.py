"""The host machine's available memory, for CPU plans and the scheduler's budget."""

from __future__ import annotations

import psutil


def available_memory() -> int:
    """Bytes the OS can give to new processes without swapping (psutil's `available`)."""
    return int(psutil.virtual_memory().available)
