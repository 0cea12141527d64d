"""Large numpy arrays as job arguments and as results, 2 workers; MB/s and peak RSS.

Each case moves ``jobs`` float64 arrays of ``size`` bytes, first as arguments (the job reads
one value per 4 KB page, so every pool really delivers every page), then as results (each
worker returns a cached array of that size, stamped with the job's index; the caller reads one
value per page of each result). MB/s is the data moved over the wall time from the first
submit to the last result read. The floor is one ``memcpy`` of the same data in the parent
(``ndarray.copy``), the least any transfer between two processes can cost.

``jobpool[process, portable]`` is jobpool with every Linux-only mechanism off
(``JOBPOOL_PORTABLE=1``), as a macOS user runs it: its large buffers go through named files in
``/dev/shm`` instead of memfds, and each result is copied once into the caller's memory.

Peak RSS is the kernel's high-water mark (``VmHWM``), reset before each direction: for the
parent, and the largest of its descendants (the workers). Shared memory a process maps counts
in its RSS; memory a process wrote with ``write`` and never mapped (jobpool's argument
segments, which the parent fills with ``pwrite``) does not, so the parent column of jobpool's
arguments row does not show the copy it made: the worker column does.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

from ..common import WORKERS, Task, median, row
from ..impls import make
from ..jobs import inc

NAME = "big_data"
TITLE = "big_data: float64 arrays as arguments and as results, 2 workers; floor = one memcpy"
COLUMNS = [
    ("arguments_mb_s", "arguments MB/s", "{:,.0f}"),
    ("results_mb_s", "results MB/s", "{:,.0f}"),
    ("parent_peak_arguments_mb", "parent peak MB (arguments)", "{:,.0f}"),
    ("parent_peak_results_mb", "parent peak MB (results)", "{:,.0f}"),
    ("worker_peak_mb", "worker peak MB", "{:,.0f}"),
]
PRIMARY = "arguments_mb_s"
HIGHER_IS_BETTER = True
ROUNDS = 2
FLOOR = "floor: one memcpy"
REFERENCE_IMPL = "mp.Pool"

IMPLS = [
    FLOOR,
    "jobpool[process]",
    "jobpool[process, portable]",  # no memfd: named files (as on macOS), JOBPOOL_PORTABLE=1
    "mp.Pool",
    "cf.ProcessPoolExecutor",
    "loky",
    "joblib(loky)",
]
MB = 1 << 20
CASES = [
    ("32 MB x 8", 32 * MB, 8, 3),
    ("256 MB x 4", 256 * MB, 4, 2),
    ("1 GB x 1", 1024 * MB, 1, 1),
]
QUICK_CASES = [("2 MB x 4", 2 * MB, 4, 1)]
PAGE_ITEMS = 4096 // 8  # float64 items per 4 KB page


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    params = {"cases": QUICK_CASES if quick else CASES}
    return [Task(NAME, impl, params, timeout=900) for impl in IMPLS]


# --- the jobs (run in the workers) ---------------------------------------------------------------

_CACHED: dict[int, Any] = {}


def read_pages(array: Any) -> float:
    """Read one value per page: the whole array must have arrived."""
    return float(array[::PAGE_ITEMS].sum())


def cached_array(size: int, stamp: int) -> Any:
    """An array of ``size`` bytes the worker already holds, stamped with ``stamp``."""
    import numpy

    array = _CACHED.get(size)
    if array is None:
        _CACHED.clear()  # one size at a time: the worker's RSS is that of one array
        array = _CACHED[size] = numpy.ones(size // 8)
    array[0] = stamp
    return array


# --- peak RSS ------------------------------------------------------------------------------------


def _descendants() -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process().children(recursive=True)]
    except ImportError:
        return []


def _reset_peaks(pids: list[int]) -> None:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            pass


def _peak_mb(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Peaks:
    """Peak RSS of this process and of its largest descendant over a ``with`` block."""

    def __enter__(self) -> Peaks:
        self.pids = _descendants()
        _reset_peaks([os.getpid(), *self.pids])
        self.parent: Optional[float] = None
        self.worker: Optional[float] = None
        return self

    def __exit__(self, *exc: object) -> None:
        self.parent = _peak_mb(os.getpid())
        peaks = [p for p in map(_peak_mb, set(self.pids) | set(_descendants())) if p is not None]
        self.worker = max(peaks) if peaks else None


# --- one implementation --------------------------------------------------------------------------


def _floor_case(size: int, jobs: int, reps: int) -> dict[str, list[float]]:
    import numpy

    out: dict[str, list[float]] = {"arguments_mb_s": [], "results_mb_s": []}
    arrays = [numpy.full(size // 8, float(i)) for i in range(jobs)]
    for _ in range(reps):  # the same copy stands for both directions
        with Peaks() as peaks:
            start = time.perf_counter()
            copies = [a.copy() for a in arrays]
            wall = time.perf_counter() - start
        del copies
        rate = size * jobs / MB / wall
        out["arguments_mb_s"].append(rate)
        out["results_mb_s"].append(rate)
        out.setdefault("parent_peak_arguments_mb", []).append(peaks.parent or 0.0)
        out.setdefault("parent_peak_results_mb", []).append(peaks.parent or 0.0)
    return out


def _pool_case(adapter: Any, size: int, jobs: int, reps: int) -> dict[str, list[float]]:
    import numpy

    out: dict[str, list[float]] = {}
    arrays = [numpy.full(size // 8, float(i)) for i in range(jobs)]
    pages = len(range(0, size // 8, PAGE_ITEMS))
    worker = 0.0
    for _ in range(reps):
        with Peaks() as peaks:
            start = time.perf_counter()
            sums = adapter.run_all(read_pages, arrays)
            wall = time.perf_counter() - start
        assert sums == [float(i) * pages for i in range(jobs)], "an argument arrived damaged"
        out.setdefault("arguments_mb_s", []).append(size * jobs / MB / wall)
        out.setdefault("parent_peak_arguments_mb", []).append(peaks.parent or 0.0)
        worker = max(worker, peaks.worker or 0.0)
    del arrays  # the results phase holds only the results
    # Each worker makes its array of this size before the timing (as it would have its
    # result ready): jobs that also wait a little, so that every worker gets some.
    adapter.run_all(Stamped(size, pause=0.2), range(2 * WORKERS))
    for _ in range(reps):
        with Peaks() as peaks:
            start = time.perf_counter()
            results = adapter.run_all(Stamped(size), range(jobs))
            checks = [float(r[::PAGE_ITEMS].sum()) for r in results]
            wall = time.perf_counter() - start
        assert [r[0] for r in results] == list(range(jobs)), "results were not each job's own"
        del results, checks
        out.setdefault("results_mb_s", []).append(size * jobs / MB / wall)
        out.setdefault("parent_peak_results_mb", []).append(peaks.parent or 0.0)
        worker = max(worker, peaks.worker or 0.0)
    out["worker_peak_mb"] = [worker]
    return out


class Stamped:
    """``partial(cached_array, size)``, picklable by reference on every pool; ``pause``: then
    sleep that long and return nothing (the warm-up)."""

    def __init__(self, size: int, pause: float = 0.0) -> None:
        self.size = size
        self.pause = pause

    def __call__(self, stamp: int) -> Any:
        array = cached_array(self.size, stamp)
        if self.pause:
            time.sleep(self.pause)
            return None
        return array


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    if impl == FLOOR:
        for case, size, jobs, reps in params["cases"]:
            r = row(f"{FLOOR} | {case}", "process", "ndarray.copy", **_floor_case(size, jobs, reps))
            r["ref"] = None
            rows.append(r)
        return rows
    adapter = make(impl)
    adapter.open(WORKERS)
    try:
        adapter.warm(inc, WORKERS)
        small = 2 * MB
        for _ in range(2):  # numpy imported, every worker has run both jobs once
            adapter.run_all(read_pages, [__import__("numpy").ones(small // 8)] * (2 * WORKERS))
            adapter.run_all(Stamped(small), range(2 * WORKERS))
        for case, size, jobs, reps in params["cases"]:
            r = row(f"{impl} | {case}", adapter.flavour, adapter.submit_api)
            r["metrics"] = _pool_case(adapter, size, jobs, reps)
            r["ref"] = f"{REFERENCE_IMPL} | {case}"
            rows.append(r)
    finally:
        adapter.close()
    return rows


def derive(rows: list[dict[str, Any]], params: dict[str, Any]) -> None:
    """Each row's rates as a share of the memcpy floor of its case (in ``info``)."""
    floors = {
        r["impl"].split(" | ")[1]: median(r["metrics"].get("arguments_mb_s", []))
        for r in rows
        if r["impl"].startswith(FLOOR)
    }
    for r in rows:
        case = r["impl"].split(" | ")[-1]
        floor = floors.get(case)
        for metric in ("arguments_mb_s", "results_mb_s"):
            mine = median(r["metrics"].get(metric, []))
            if floor and mine:
                r["info"][f"{metric} / floor"] = round(mine / floor, 3)
