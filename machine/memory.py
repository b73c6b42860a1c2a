"""The host machine's free memory, for CPU plans and the scheduler's budget."""

from __future__ import annotations


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (bytes); a very large number where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 50
