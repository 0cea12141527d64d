"""per_worker: the per-job cost of a handle's method against a plain module-level function.

``per_worker(Counter).inc`` and the module-level ``inc`` do the same work (x + 1), so the
difference is what calling through a handle costs: pickling the method (once, then cached),
finding the worker's instance, calling a bound method. Both run on the same warmed process pool
in one child process, alternating which goes first at each repetition, with ``submit`` of N
trivial jobs (all, then wait for all, as in ``overhead``) and with ``map`` over N items. A
``map`` of N tiny items takes a few ms, so it is repeated ``map_reps`` times per repetition.
"""

from __future__ import annotations

from typing import Any, Callable

from ..common import WORKERS, Task, row, timed
from ..impls import make
from ..jobs import Counter, inc

NAME = "per_worker"
TITLE = (
    "per_worker: per-job cost of per_worker(Counter).inc vs a module-level inc, process, 2 workers"
)
COLUMNS = [("us_per_job", "us/job", "{:.2f}")]
PRIMARY = "us_per_job"
HIGHER_IS_BETTER = False
ROUNDS = 3
IMPL = "jobpool[process]"
APIS = ("submit", "map")


def row_name(kind: str, api: str) -> str:
    return f"{IMPL} {kind} {api}"


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    params = (
        {"n": 500, "reps": 2, "map_reps": 2} if quick else {"n": 10_000, "reps": 6, "map_reps": 8}
    )
    return [Task(NAME, IMPL, params, timeout=600)]


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    from jobpool import per_worker

    n = params["n"]
    adapter = make(IMPL)
    adapter.open(WORKERS)
    counter = per_worker(Counter)
    functions: dict[str, Callable[[int], int]] = {"function": inc, "per_worker": counter.inc}
    samples: dict[tuple[str, str], list[float]] = {
        (kind, api): [] for kind in functions for api in APIS
    }
    try:
        adapter.warm(inc, WORKERS)
        for fn in functions.values():
            adapter.run_all(fn, range(8 * WORKERS))
            list(adapter.map(fn, range(1000)))
        for rep in range(params["reps"]):
            kinds = list(functions) if rep % 2 == 0 else list(functions)[::-1]
            for kind in kinds:
                fn = functions[kind]
                samples[kind, "submit"].append(_seconds_per_job(adapter, "submit", fn, n))
                samples[kind, "map"] += [
                    _seconds_per_job(adapter, "map", fn, n) for _ in range(params["map_reps"])
                ]
    finally:
        adapter.close()
    rows = []
    for (kind, api), seconds in samples.items():
        out = row(row_name(kind, api), "process", api, us_per_job=[s * 1e6 for s in seconds])
        out["ref"] = row_name("function", api)
        rows.append(out)
    return rows


def _seconds_per_job(adapter: Any, api: str, fn: Callable[[int], int], n: int) -> float:
    if api == "submit":
        return timed(lambda: adapter.run_all(fn, range(n))) / n
    return timed(lambda: list(adapter.map(fn, range(n)))) / n
