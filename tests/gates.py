"""Shared gate objects for concurrency tests, built for the backend under test."""

from __future__ import annotations

import multiprocessing
import threading
import time
from types import SimpleNamespace
from typing import Any, Callable

from conftest import WAIT


class Gate:
    """Counts jobs inside ``jobs.gated`` and records the most that were ever inside at once."""

    def __init__(self, backend: str) -> None:
        if backend.startswith("process-"):
            ctx: Any = multiprocessing.get_context(backend.split("-", 1)[1])
            self.counter = ctx.Value("i", 0, lock=False)
            self.high = ctx.Value("i", 0, lock=False)
            self.lock = ctx.Lock()
            self.release = ctx.Event()
            self.entered = ctx.Semaphore(0)
        else:
            self.counter = SimpleNamespace(value=0)
            self.high = SimpleNamespace(value=0)
            self.lock = threading.Lock()
            self.release = threading.Event()
            self.entered = threading.Semaphore(0)

    @property
    def initargs(self) -> tuple[Any, ...]:
        return (self.counter, self.lock, self.high, self.release, self.entered)

    def wait_entered(self, n: int, timeout: float = 60) -> None:
        for _ in range(n):
            if not self.entered.acquire(timeout=timeout):
                raise AssertionError("jobs did not enter the gate in time")


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Wait (at most WAIT seconds) for a condition another process makes true.

    For state a Dask worker writes (a file counter): there is no event to share with a
    process on a cluster, so this looks again every few milliseconds, with a deadline.
    """
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
