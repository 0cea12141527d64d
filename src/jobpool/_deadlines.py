"""A timer thread that fires callbacks at deadlines, for jobs whose thread cannot be interrupted.

One thread sleeps on a condition until the nearest deadline (never a fixed polling interval) and
is started only when the first deadline is added. With ``exit_when_idle`` it ends once nothing is
due, and the next deadline starts another: for deadlines that come in bursts (retries), so that
no thread is left sleeping for a pool that was dropped without being shut down.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Callable


class DeadlineTimer:
    def __init__(self, name: str, exit_when_idle: bool = False) -> None:
        self._name = name
        self._exit_when_idle = exit_when_idle
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` in the timer thread ``delay`` seconds from now."""
        when = time.monotonic() + delay
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (when, next(self._order), callback))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0][0] == when:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    if not self._heap and self._exit_when_idle:
                        self._thread = None  # the next add() starts another
                        return
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                if self._closed:
                    return
                _, _, callback = heapq.heappop(self._heap)
            callback()
