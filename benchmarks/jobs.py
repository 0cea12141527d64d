"""The functions the benchmarks run in workers (importable by name, so plain pickle works)."""

from __future__ import annotations

import os
import time
from typing import Any, Callable


def inc(x: int) -> int:
    return x + 1


def square(x: int) -> int:
    return x * x


def identity(x: Any) -> Any:
    return x


def cpu_loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def sleep_job(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def crash_or_sleep(i: int, crash_at: int = 5, seconds: float = 0.02) -> int:
    """Job ``crash_at`` kills its worker process; the others sleep ``seconds``."""
    if i == crash_at:
        os._exit(1)
    time.sleep(seconds)
    return i


def make_big_closure(size: int) -> Callable[[int], tuple[int, bool]]:
    """A closure holding ``size`` bytes; it reports whether this copy of it ran before.

    A worker that received a fresh copy of the function sees ``state["seen"]`` False once, so the
    sum of the ``fresh`` flags counts how many times the function was shipped.
    """
    big = bytes(size)
    state = {"seen": False}

    def job(x: int) -> tuple[int, bool]:
        fresh = not state["seen"]
        state["seen"] = True
        return len(big) + x, fresh

    return job


class Counter:
    """The object behind a per_worker handle in the per_worker workload: ``inc`` as a method."""

    def inc(self, x: int) -> int:
        return x + 1
