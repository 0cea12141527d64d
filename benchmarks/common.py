"""Small helpers shared by the workloads: tasks, rows, statistics, timing and RSS sampling."""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

WORKERS = 2


@dataclass
class Task:
    """One child process: run ``workload`` for ``impl`` with ``params``, within ``timeout`` s."""

    workload: str
    impl: str
    params: dict[str, Any] = field(default_factory=dict)
    timeout: float = 120.0


def row(impl: str, flavour: str, api: str, **metrics: list[float]) -> dict[str, Any]:
    return {"impl": impl, "flavour": flavour, "api": api, "metrics": metrics, "info": {}}


def median(values: list[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def spread(values: list[float]) -> Optional[float]:
    """(max - min) / median: how noisy the repetitions were."""
    mid = median(values)
    if not values or not mid:
        return None
    return (max(values) - min(values)) / mid


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def current_rss() -> int:
    """Resident set size of this process in bytes (psutil if present, else /proc)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples this process's RSS every ``interval`` s in a thread; ``peak`` is the maximum."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = current_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss())
