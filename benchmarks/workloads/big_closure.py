"""A closure capturing a big bytes object, run as many small jobs on 2 worker processes.

'shipments' counts the jobs that ran a freshly received copy of the function: equal to the
number of jobs means the function travelled with every job, <= workers means once per worker.
Each repetition uses a fresh pool, started and warmed before timing (mpire: with the closure
itself, which its fork workers inherit), and a fresh closure.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..common import WORKERS, Task, row
from ..impls import make
from ..jobs import inc, make_big_closure

NAME = "big_closure"
TITLE = "big_closure: N jobs of a closure capturing SIZE bytes, 2 workers"
COLUMNS = [("wall_s", "wall s", "{:.3f}"), ("shipments", "shipments", "{:.0f}")]
PRIMARY = "wall_s"
HIGHER_IS_BETTER = False
ROUNDS = 3
REFERENCE = {"thread": "cf.ThreadPoolExecutor", "process": "loky"}

IMPLS = [
    "jobpool[thread]",
    "jobpool[process]",
    "jobpool[process] map",
    "cf.ProcessPoolExecutor",
    "loky",
    "mpire",
    "joblib(loky)",
]


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    if quick:
        params = {"size": 1_000_000, "jobs": 6, "reps": 1}
    else:
        params = {"size": 20_000_000, "jobs": 50, "reps": 1}
    return [Task(NAME, impl, params, timeout=300) for impl in IMPLS]


def _one(impl: str, params: dict[str, Any]) -> tuple[float, int, str, str]:
    """One repetition: (wall seconds, shipments, flavour, api)."""
    closure: Callable[[int], tuple[int, bool]] = make_big_closure(params["size"])
    jobs = range(params["jobs"])
    if impl == "mpire":  # its workers inherit the closure when they fork (peers.md)
        from mpire import WorkerPool

        with WorkerPool(n_jobs=WORKERS, start_method="fork", keep_alive=True) as pool:
            # Started (and warmed) before timing, as every other pool: the first map forks the
            # workers with the closure; keep_alive reuses them for the same function.
            warm = pool.map(closure, range(2 * WORKERS), progress_bar=False)
            start = time.perf_counter()
            results = pool.map(closure, jobs, progress_bar=False)
            wall = time.perf_counter() - start
        shipped = sum(f for _, f in warm) + sum(f for _, f in results)
        return wall, shipped, "process", "map (fork pool, keep_alive)"
    base = impl.replace(" map", "")
    adapter = make(base)
    adapter.open(WORKERS)
    try:
        adapter.warm(inc, WORKERS)
        start = time.perf_counter()
        if impl.endswith(" map"):
            results = list(adapter.map(closure, jobs))
            api = "map (defaults)"
        elif impl.startswith("joblib"):
            results = list(adapter.map(closure, jobs))
            api = adapter.map_api
        else:
            results = adapter.run_all(closure, jobs)
            api = adapter.submit_api
        wall = time.perf_counter() - start
    finally:
        adapter.close()
    return wall, sum(f for _, f in results), adapter.flavour, api


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    walls: list[float] = []
    shipments: list[float] = []
    flavour, api = "thread" if "thread" in impl else "process", ""
    try:
        for _ in range(params["reps"]):
            wall, shipped, flavour, api = _one(impl, params)
            walls.append(wall)
            shipments.append(float(shipped))
    except Exception as exc:
        out = row(impl, flavour, api)
        out["info"] = {"error": f"{type(exc).__name__}: {exc}"[:100]}
        return [out]
    if flavour == "thread":
        shipments = []  # threads share the function: nothing is shipped
    return [row(impl, flavour, api, wall_s=walls, shipments=shipments)]
