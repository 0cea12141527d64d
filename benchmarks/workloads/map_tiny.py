"""map(x*x) over N tiny ints, each implementation at its best chunk size; 2 workers.

Every implementation is tried with each chunk size its API takes in ``Adapter.chunksizes`` (its
own default or automatic choice, 1,000 and 16,384: jobpool's largest adaptive chunk), in the
same child process, the order alternating between repetitions. One row per setting
(``impl [cs=...]``), and one row per implementation at its best setting, which the ratios and
verdicts use; jobpool's ``[cs=default]`` row is what ``pool.map(fn, items)`` gives.
``mp.Pool.map``'s automatic chunksize comes from ``len(items)``, and it reads everything at once.
"""

from __future__ import annotations

import statistics
from typing import Any, Optional

from ..common import WORKERS, Task, row, timed
from ..impls import make
from ..jobs import inc, square

NAME = "map_tiny"
TITLE = "map_tiny: map(x*x) over N ints, each chunk size tried, 2 workers"
COLUMNS = [("items_per_s", "items/s", "{:,.0f}")]
PRIMARY = "items_per_s"
HIGHER_IS_BETTER = True
ROUNDS = 3
REFERENCE = {"thread": "mp.ThreadPool", "process": "mp.Pool"}

IMPLS = [
    "jobpool[thread]",
    "mp.ThreadPool",
    "jobpool[process]",
    "mp.Pool",
    "cf.ProcessPoolExecutor",
    "loky",
    "mpire",
    "pebble.ProcessPool",
    "joblib(loky)",
]


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    params = {"n": 2_000, "reps": 2} if quick else {"n": 200_000, "reps": 2}
    return [Task(NAME, impl, params, timeout=300) for impl in IMPLS]


def _label(impl: str, chunksize: Optional[int]) -> str:
    if chunksize is not None:
        return str(chunksize)
    return "default" if impl.startswith("jobpool") else "auto"


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    n = params["n"]
    items = list(range(n))
    adapter = make(impl)
    adapter.open(WORKERS)
    samples: dict[Optional[int], list[float]] = {size: [] for size in adapter.chunksizes}
    try:
        adapter.warm(inc, WORKERS)
        for rep in range(params["reps"]):
            order = adapter.chunksizes if rep % 2 == 0 else adapter.chunksizes[::-1]
            for size in order:
                wall = timed(lambda size=size: list(adapter.map(square, items, size)))
                samples[size].append(n / wall)
    finally:
        adapter.close()
    return [
        row(f"{impl} [cs={_label(impl, size)}]", adapter.flavour, adapter.map_api, items_per_s=got)
        for size, got in samples.items()
    ]


def derive(rows: list[dict[str, Any]], params: dict[str, Any]) -> None:
    """Add one row per implementation: its best setting, by median items/s."""
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    for r in rows:
        impl, _, setting = r["impl"].partition(" [cs=")
        values = r["metrics"].get("items_per_s") or []
        score = statistics.median(values) if values else 0.0
        if impl not in best or score > best[impl][0]:
            best[impl] = (score, r)
    for impl, (_, r) in best.items():
        setting = r["impl"].partition(" [cs=")[2].rstrip("]")
        summary = row(impl, r["flavour"], f"{r['api']} best: cs={setting}", **r["metrics"])
        rows.append(summary)
