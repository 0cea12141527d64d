"""Per-job overhead: N trivial jobs (x + 1), submit them all, then wait for all; 2 workers."""

from __future__ import annotations

from typing import Any

from ..common import WORKERS, Task, row, timed
from ..impls import PROCESS_IMPLS, THREAD_IMPLS, make
from ..jobs import inc

NAME = "overhead"
TITLE = "per-job overhead: N trivial jobs inc(x), submit all then wait all, 2 workers"
COLUMNS = [("us_per_job", "us/job", "{:.1f}")]
PRIMARY = "us_per_job"
HIGHER_IS_BETTER = False
ROUNDS = 3


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    params = {"n": 200, "reps": 2} if quick else {"n": 10_000, "reps": 3}
    return [Task(NAME, impl, params, timeout=300) for impl in THREAD_IMPLS + PROCESS_IMPLS]


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    n = params["n"]
    adapter = make(impl)
    adapter.open(WORKERS)
    try:
        adapter.warm(inc, WORKERS)
        samples = [
            timed(lambda: adapter.run_all(inc, range(n))) / n * 1e6 for _ in range(params["reps"])
        ]
    finally:
        adapter.close()
    return [row(impl, adapter.flavour, adapter.submit_api, us_per_job=samples)]
