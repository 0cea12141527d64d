"""per_worker: the per-job cost of a handle's method against a plain module-level function.

``per_worker(Counter).inc`` and the module-level ``inc`` do the same work (x + 1), so the
difference is what calling through a handle costs: pickling the method (once, then cached),
finding the worker's instance, calling a bound method. Both run on the same warmed process pool
in one child process, with ``submit`` of N trivial jobs (all, then wait for all, as in
``overhead``) and with ``map`` over N items (a few ms, so repeated ``map_reps`` times).

Each measurement of the handle is paired with one of the function taken right before or after
it (the order alternates), and the verdict uses the median of those paired ratios
(``x_function``): on a shared machine, load drifts between repetitions far more than within a
pair.
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
COLUMNS = [("us_per_job", "us/job", "{:.2f}"), ("x_function", "x function (paired)", "{:.3f}")]
PRIMARY = "us_per_job"
HIGHER_IS_BETTER = False
ROUNDS = 3
IMPL = "jobpool[process]"
KINDS = ("function", "per_worker")


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
    functions: dict[str, Callable[[int], int]] = {
        "function": inc,
        "per_worker": per_worker(Counter).inc,
    }
    us: dict[tuple[str, str], list[float]] = {(k, a): [] for k in KINDS for a in ("submit", "map")}
    ratios: dict[str, list[float]] = {"submit": [], "map": []}
    try:
        adapter.warm(inc, WORKERS)
        for fn in functions.values():
            adapter.run_all(fn, range(8 * WORKERS))
            list(adapter.map(fn, range(1000)))
        for rep in range(params["reps"]):
            kinds = KINDS if rep % 2 == 0 else KINDS[::-1]
            for api, count in (("submit", 1), ("map", params["map_reps"])):
                for _ in range(count):
                    pair = {
                        kind: _seconds_per_job(adapter, api, functions[kind], n) for kind in kinds
                    }
                    for kind, seconds in pair.items():
                        us[kind, api].append(seconds * 1e6)
                    ratios[api].append(pair["per_worker"] / pair["function"])
    finally:
        adapter.close()
    rows = []
    for (kind, api), samples in us.items():
        metrics = {"us_per_job": samples}
        if kind == "per_worker":
            metrics["x_function"] = ratios[api]
        out = row(row_name(kind, api), "process", api, **metrics)
        out["ref"] = row_name("function", api)
        rows.append(out)
    return rows


def _seconds_per_job(adapter: Any, api: str, fn: Callable[[int], int], n: int) -> float:
    if api == "submit":
        return timed(lambda: adapter.run_all(fn, range(n))) / n
    return timed(lambda: list(adapter.map(fn, range(n)))) / n
