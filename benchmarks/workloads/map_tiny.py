"""map(x*x) over N tiny ints, each implementation with its default/best bulk API; 2 workers.

jobpool runs ``pool.map(fn, items)`` with default arguments (adaptive chunks, lazy window);
``mp.Pool.map`` picks its chunksize from ``len(items)`` and reads everything at once.
"""

from __future__ import annotations

from typing import Any

from ..common import WORKERS, Task, row, timed
from ..impls import make
from ..jobs import inc, square

NAME = "map_tiny"
TITLE = "map_tiny: map(x*x) over N ints, default/best bulk API, 2 workers"
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


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    n = params["n"]
    items = list(range(n))
    adapter = make(impl)
    adapter.open(WORKERS)
    try:
        adapter.warm(inc, WORKERS)
        samples = [
            n / timed(lambda: list(adapter.map(square, items))) for _ in range(params["reps"])
        ]
    finally:
        adapter.close()
    return [row(impl, adapter.flavour, adapter.map_api, items_per_s=samples)]
