"""retries: the per-job cost of a pool with ``retries=3`` set, against the same pool without.

The jobs never fail, so what is measured is what having retries set costs a job that does not
need them: its ``Attempts`` record, being counted among the jobs that may retry (a done-callback),
and the checks on its outcome. Two pools of each backend (thread, process) run in one child
process, one with retries and one without, on the same trivial function: ``submit`` of N jobs
(all, then wait for all, as in ``overhead``) and ``map`` over N items.

Each measurement of the pool with retries is paired with one of the pool without, taken right
before or after it (the order alternates), and the verdict uses the median of those paired
ratios (``x_plain``): on a shared machine, load drifts between repetitions far more than within
a pair.
"""

from __future__ import annotations

from typing import Any

from ..common import WORKERS, Task, row, timed
from ..jobs import inc

NAME = "retries"
TITLE = "retries: per-job cost of a pool with retries=3 vs the same pool without, 2 workers"
COLUMNS = [("us_per_job", "us/job", "{:.2f}"), ("x_plain", "x without (paired)", "{:.3f}")]
PRIMARY = "us_per_job"
HIGHER_IS_BETTER = False
ROUNDS = 3
KINDS = ("plain", "retries")
FLAVOURS = ("thread", "process")


def row_name(flavour: str, kind: str, api: str) -> str:
    return f"jobpool[{flavour}] {kind} {api}"


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    params = (
        {"n": 500, "reps": 2, "map_reps": 2} if quick else {"n": 10_000, "reps": 6, "map_reps": 8}
    )
    return [Task(NAME, f"jobpool[{flavour}]", {**params, "flavour": flavour}, timeout=600)
            for flavour in FLAVOURS]  # fmt: skip


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    from jobpool import Pool

    n, flavour = params["n"], params["flavour"]
    pools = {
        "plain": Pool(WORKERS, backend=flavour),
        "retries": Pool(WORKERS, backend=flavour, retries=3),
    }
    us: dict[tuple[str, str], list[float]] = {(k, a): [] for k in KINDS for a in ("submit", "map")}
    ratios: dict[str, list[float]] = {"submit": [], "map": []}
    try:
        for pool in pools.values():  # every worker started, the function shipped to each
            [f.result() for f in [pool.submit(inc, x) for x in range(8 * WORKERS)]]
            list(pool.map(inc, range(1000)))
        for rep in range(params["reps"]):
            kinds = KINDS if rep % 2 == 0 else KINDS[::-1]
            for api, count in (("submit", 1), ("map", params["map_reps"])):
                for _ in range(count):
                    pair = {kind: _seconds_per_job(pools[kind], api, n) for kind in kinds}
                    for kind, seconds in pair.items():
                        us[kind, api].append(seconds * 1e6)
                    ratios[api].append(pair["retries"] / pair["plain"])
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True)
    rows = []
    for (kind, api), samples in us.items():
        metrics = {"us_per_job": samples}
        if kind == "retries":
            metrics["x_plain"] = ratios[api]
        out = row(row_name(flavour, kind, api), flavour, api, **metrics)
        out["ref"] = row_name(flavour, "plain", api)
        rows.append(out)
    return rows


def _seconds_per_job(pool: Any, api: str, n: int) -> float:
    if api == "submit":
        return timed(lambda: [f.result() for f in [pool.submit(inc, x) for x in range(n)]]) / n
    return timed(lambda: list(pool.map(inc, range(n)))) / n
