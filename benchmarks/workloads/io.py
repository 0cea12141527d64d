"""I/O-bound on threads: J jobs of time.sleep(10 ms) on 50 worker threads; ideal = J/50 * 10 ms."""

from __future__ import annotations

from typing import Any

from ..common import Task, row, timed
from ..impls import THREAD_IMPLS, make
from ..jobs import sleep_job

NAME = "io"
TITLE = "io: J jobs of sleep(10 ms) on 50 threads (warm pool), ideal = J/50 x 10 ms"
COLUMNS = [("wall_ms", "wall ms", "{:.1f}"), ("x_ideal", "x ideal", "{:.3f}")]
PRIMARY = "wall_ms"
HIGHER_IS_BETTER = False
ROUNDS = 3
THREADS = 50
SLEEP = 0.01


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    params = {"jobs": 100 if quick else 300, "reps": 2 if quick else 3}
    impls = THREAD_IMPLS[:2] if quick else THREAD_IMPLS
    return [Task(NAME, impl, params, timeout=300) for impl in impls]


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    args = [SLEEP] * params["jobs"]
    adapter = make(impl)
    adapter.open(THREADS)
    try:
        adapter.run_all(sleep_job, args)  # warm-up: starts the threads
        walls = [
            timed(lambda: adapter.run_all(sleep_job, args)) * 1e3 for _ in range(params["reps"])
        ]
    finally:
        adapter.close()
    return [row(impl, adapter.flavour, adapter.submit_api, wall_ms=walls)]


def derive(rows: list[dict[str, Any]], params: dict[str, Any]) -> None:
    ideal_ms = params["jobs"] / THREADS * SLEEP * 1e3
    for r in rows:
        r["metrics"]["x_ideal"] = [w / ideal_ms for w in r["metrics"].get("wall_ms", [])]
