"""jobpool.multiprocessing against multiprocessing.Pool: the same calls, the same code.

Per-task overhead of ``apply_async`` (N trivial jobs submitted, then every ``get()``: the shape
of the classic tutorial script), and throughput of ``map`` and ``imap`` over tiny items, each
with its default chunksize (the stdlib's ``imap`` defaults to 1; jobpool's adapts) and with
``chunksize=1000``. Processes and threads, 2 workers, each pool with its default start method.
"""

from __future__ import annotations

from typing import Any

from ..common import WORKERS, Task, median, row, timed
from ..jobs import inc, square

NAME = "mp_pool"
TITLE = "multiprocessing.Pool drop-in: apply_async overhead, map / imap over tiny ints, 2 workers"
COLUMNS = [
    ("apply_us", "apply_async us/job", "{:.1f}"),
    ("map_items_s", "map items/s", "{:,.0f}"),
    ("imap_items_s", "imap items/s", "{:,.0f}"),
    ("imap1000_items_s", "imap(chunksize=1000) items/s", "{:,.0f}"),
]
PRIMARY = "apply_us"
HIGHER_IS_BETTER = False
ROUNDS = 3
REFERENCE = {"thread": "mp.ThreadPool", "process": "mp.Pool"}
PAIRS = {"jobpool.mp.Pool": "mp.Pool", "jobpool.mp.ThreadPool": "mp.ThreadPool"}
IMPLS = ["jobpool.mp.Pool", "mp.Pool", "jobpool.mp.ThreadPool", "mp.ThreadPool"]


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    if quick:
        params = {"apply_n": 200, "map_n": 2_000, "imap_n": 200, "reps": 2}
    else:
        params = {"apply_n": 5_000, "map_n": 200_000, "imap_n": 20_000, "reps": 5}
    return [Task(NAME, impl, params, timeout=300) for impl in IMPLS]


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    from ..impls import make

    adapter = make(impl)
    adapter.open(WORKERS)
    pool = adapter.pool
    apply_n, map_items, imap_items = (
        params["apply_n"],
        list(range(params["map_n"])),
        list(range(params["imap_n"])),
    )
    metrics: dict[str, list[float]] = {name: [] for name, _, _ in COLUMNS}
    try:
        adapter.warm(inc, WORKERS)
        jobs = range(apply_n)
        for _ in range(params["reps"]):
            wall = timed(lambda: [r.get() for r in [pool.apply_async(inc, (i,)) for i in jobs]])
            metrics["apply_us"].append(wall / apply_n * 1e6)
            metrics["map_items_s"].append(
                len(map_items) / timed(lambda: pool.map(square, map_items))
            )
            wall = timed(lambda: list(pool.imap(square, imap_items)))
            metrics["imap_items_s"].append(len(imap_items) / wall)
            wall = timed(lambda: list(pool.imap(square, map_items, chunksize=1000)))
            metrics["imap1000_items_s"].append(len(map_items) / wall)
    finally:
        adapter.close()
    return [row(impl, adapter.flavour, f"{adapter.start_method}", **metrics)]


def derive(rows: list[dict[str, Any]], params: dict[str, Any]) -> None:
    """Each jobpool row: its speed against its stdlib twin on every measure, and a verdict."""
    by_impl = {r["impl"]: r for r in rows}
    for mine, theirs in PAIRS.items():
        if mine not in by_impl or theirs not in by_impl:
            continue
        ratios = speed_ratios(by_impl[mine], by_impl[theirs])
        info = by_impl[mine]["info"]
        info["speed x stdlib"] = ", ".join(f"{name} {r:.2f}x" for name, r in ratios.items())
        info["at least as fast"] = "yes" if all(r >= 1.0 for r in ratios.values()) else "NO"


def speed_ratios(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    """Speed of ``mine`` over ``theirs`` per measure (> 1: faster), from the medians."""
    out = {}
    for name, _, _ in COLUMNS:
        a, b = median(mine["metrics"].get(name, [])), median(theirs["metrics"].get(name, []))
        if a and b:
            out[name] = b / a if name == "apply_us" else a / b
    return out
