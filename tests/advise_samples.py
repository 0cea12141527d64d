"""Sample functions for ``python -m jobpool advise`` tests: one that waits, one that computes."""

from __future__ import annotations

import time


def io_bound(seconds: float = 0.02) -> float:
    """Waits, as on a network or a disk: the GIL is released while it waits."""
    time.sleep(seconds)
    return seconds


def cpu_bound(n: int = 200_000) -> int:
    """Pure-Python arithmetic: holds the GIL the whole time."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total
