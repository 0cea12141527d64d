"""Start-up: create a 2-process pool -> first result of one trivial job, per start method.

jobpool and ProcessPoolExecutor with the same start method alternate in one fresh child process
per method, after one untimed round each (so the fork server is already running, as in
peers.md). Shutdown is timed separately.
"""

from __future__ import annotations

import time
from typing import Any

from ..common import WORKERS, Task, row
from ..impls import make
from ..jobs import inc

NAME = "startup"
TITLE = "startup: create a 2-worker process pool -> first result of inc(1); shutdown separately"
COLUMNS = [
    ("first_result_ms", "first result ms", "{:.1f}"),
    ("shutdown_ms", "shutdown ms", "{:.1f}"),
]
PRIMARY = "first_result_ms"
HIGHER_IS_BETTER = False
METHODS = ("forkserver", "spawn", "fork")
IMPLS = ("jobpool[process]", "cf.ProcessPoolExecutor")


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    params = {"reps": 1 if quick else 9}
    return [Task(NAME, method, params, timeout=300) for method in METHODS]


def _once(impl: str, method: str) -> tuple[float, float]:
    adapter = make(impl)
    start = time.perf_counter()
    adapter.open(WORKERS, start_method=method)
    adapter.result(adapter.submit(inc, 1))
    first = time.perf_counter() - start
    start = time.perf_counter()
    adapter.close()
    return first * 1e3, (time.perf_counter() - start) * 1e3


def run(method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    firsts: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    shutdowns: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for impl in IMPLS:
        _once(
            impl, method
        )  # warm-up (starts the fork server; jobpool first, so its preload counts)
    for rep in range(params["reps"]):
        for impl in IMPLS if rep % 2 == 0 else IMPLS[::-1]:
            first, shut = _once(impl, method)
            firsts[impl].append(first)
            shutdowns[impl].append(shut)
    rows = []
    for impl in IMPLS:
        r = row(
            f"{impl} @{method}",
            "process",
            f"start_method={method!r}",
            first_result_ms=firsts[impl],
            shutdown_ms=shutdowns[impl],
        )
        r["ref"] = f"cf.ProcessPoolExecutor @{method}"
        rows.append(r)
    return rows
