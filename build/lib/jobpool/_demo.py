"""``python -m jobpool demo``: threads or processes? Measured on the user's own machine.

It runs an I/O-bound workload (jobs that wait, as on a network or disk) and a CPU-bound one (pure
Python arithmetic, which holds the GIL) serially and on both backends, through a bounded queue,
and prints wall times, speedups and a one-line conclusion for each workload.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

from ._pool import Pool


def io_job(seconds: float) -> float:
    """Stands for a network call or a disk read: the GIL is released while it waits."""
    time.sleep(seconds)
    return seconds


def cpu_job(n: int) -> int:
    """Pure-Python arithmetic: holds the GIL the whole time."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def _time(run: Callable[[], object], repeats: int = 2) -> float:
    """Best of a few runs: on a shared machine the fastest run is the least disturbed one."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _serial(fn: Callable[..., object], items: list[object]) -> Callable[[], object]:
    return lambda: [fn(x) for x in items]


def _pooled(
    backend: str, workers: int, fn: Callable[..., object], items: list[object]
) -> Callable[[], object]:
    def run() -> object:
        with Pool(workers, backend=backend, max_pending=2 * workers) as pool:
            return list(pool.map(fn, items, chunksize=1))

    return run


def run_demo(workers: Optional[int] = None, quick: bool = False) -> int:
    cpus = os.cpu_count() or 1
    cpu_workers = workers or cpus
    io_workers = workers or 16
    io_items: list[object] = [0.05] * (32 if quick else 48)
    cpu_n = 300_000 if quick else 3_000_000
    cpu_items: list[object] = [cpu_n] * (2 * cpu_workers if quick else 4 * cpu_workers)

    print(f"jobpool demo on {cpus} CPU(s); a bounded queue of 2 x workers in front of each pool\n")
    rows = []
    for title, fn, items, n_workers in (
        (f"I/O-bound: {len(io_items)} waits of 50 ms", io_job, io_items, io_workers),
        (f"CPU-bound: {len(cpu_items)} pure-Python loops", cpu_job, cpu_items, cpu_workers),
    ):
        serial = _time(_serial(fn, items))
        thread = _time(_pooled("thread", n_workers, fn, items))
        process = _time(_pooled("process", n_workers, fn, items))
        rows.append((title, n_workers, serial, thread, process))

    header = f"{'workload':<38} {'workers':>7} {'serial':>8} {'threads':>15} {'processes':>15}"
    print(header)
    print("-" * len(header))
    for title, n_workers, serial, thread, process in rows:
        print(
            f"{title:<38} {n_workers:>7} {serial:>7.2f}s "
            f"{thread:>6.2f}s ({serial / thread:>4.1f}x) "
            f"{process:>6.2f}s ({serial / process:>4.1f}x)"
        )
    print()
    for title, _, serial, thread, process in rows:
        kind = title.split(":")[0]
        print(f"{kind}: {_verdict(kind, serial, thread, process, cpus)}")
    return 0


def _verdict(kind: str, serial: float, thread: float, process: float, cpus: int) -> str:
    best = "thread" if thread <= process else "process"
    speedup = serial / min(thread, process)
    if kind == "I/O-bound":
        why = (
            "the jobs wait, and waiting releases the GIL, so many threads overlap cheaply"
            if best == "thread"
            else "processes won this run, but for waiting jobs threads are as fast and cheaper"
        )
    elif best == "process":
        why = (
            "the jobs compute in Python and hold the GIL, so only separate processes "
            f"run them in parallel (up to {cpus}x on {cpus} CPU(s))"
        )
    else:
        why = (
            "processes did not pay off in this run: the jobs are too short to repay starting "
            "processes and pickling, or the machine is busy; try longer jobs"
        )
    return f"use backend={best!r}: {speedup:.1f}x faster than serial; {why}."
