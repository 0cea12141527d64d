"""CPU-bound: J jobs of a ~100 ms pure-Python loop, one job per task, 2 workers; vs serial."""

from __future__ import annotations

from typing import Any

from ..common import WORKERS, Task, median, row, timed
from ..impls import PROCESS_IMPLS, make
from ..jobs import cpu_loop, inc

NAME = "cpu"
TITLE = "cpu: J jobs of a pure-Python loop (~100 ms each), submitted one per job, 2 workers"
COLUMNS = [("wall_s", "wall s", "{:.3f}"), ("speedup", "speedup vs serial", "{:.2f}")]
PRIMARY = "wall_s"
HIGHER_IS_BETTER = False
ROUNDS = 3
REFERENCE = {"thread": "cf.ThreadPoolExecutor", "process": "mp.Pool"}

IMPLS = [
    "serial",
    "jobpool[thread]",
    "cf.ThreadPoolExecutor",
    "jobpool[process] map",
    *PROCESS_IMPLS,
]


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    params = {"n": cpu_n, "jobs": 4 if quick else 16, "reps": 1 if quick else 2}
    impls = [*IMPLS[:4], "jobpool[process]", "mp.Pool"] if quick else IMPLS
    return [Task(NAME, impl, params, timeout=300) for impl in impls]


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    args = [params["n"]] * params["jobs"]
    if impl == "serial":
        walls = [timed(lambda: [cpu_loop(a) for a in args]) for _ in range(params["reps"])]
        return [row("serial", "serial", "for loop", wall_s=walls)]
    adapter = make(impl.replace(" map", ""))
    adapter.open(WORKERS)
    try:
        adapter.warm(inc, WORKERS)
        if impl.endswith(" map"):
            api = "map (defaults)"
            walls = [
                timed(lambda: list(adapter.map(cpu_loop, args))) for _ in range(params["reps"])
            ]
        else:
            api = adapter.submit_api
            walls = [timed(lambda: adapter.run_all(cpu_loop, args)) for _ in range(params["reps"])]
    finally:
        adapter.close()
    return [row(impl, adapter.flavour, api, wall_s=walls)]


def derive(rows: list[dict[str, Any]], params: dict[str, Any]) -> None:
    serial = next((r for r in rows if r["impl"] == "serial"), None)
    base = median(serial["metrics"]["wall_s"]) if serial else None
    for r in rows:
        wall = median(r["metrics"].get("wall_s", []))
        if base and wall:
            r["metrics"]["speedup"] = [base / w for w in r["metrics"]["wall_s"]]
