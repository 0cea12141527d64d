"""Lazy map over a big generator, in a fresh process per run: parent RSS growth and read-ahead.

Consume ``map(identity, gen(N))`` one result at a time (chunksize 1000 where the API takes one)
while a thread samples the parent's RSS. Read-ahead = items pulled from the generator minus
results consumed. Stall probe: consume 100 results of a smaller generator, stop reading and count
the items pulled after ``stall_s`` and ``2 * stall_s``; lazy = fewer than 10% of it pulled.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Iterator
from typing import Any, Optional

from ..common import WORKERS, PeakRss, Task, current_rss, row
from ..impls import LAZY_CHUNK, SWEEP_CHUNK, make
from ..jobs import identity, inc

NAME = "lazy"
TITLE = "lazy: map(identity) over a generator of N ints, consumed one by one, fresh process each"
COLUMNS = [
    ("items_per_s", "items/s", "{:,.0f}"),
    ("rss_growth_mb", "parent RSS growth MB", "{:.1f}"),
    ("max_read_ahead", "max read-ahead", "{:,.0f}"),
    ("stall_pulled", "pulled while stalled", "{:,.0f}"),
]
PRIMARY = "items_per_s"
HIGHER_IS_BETTER = True
REFERENCE = {"thread": "mp.ThreadPool", "process": "mp.Pool"}

# Every implementation runs the same number of fresh child processes; an API that takes a chunk
# size is tried with 1,000 and with 16,384 (jobpool's largest adaptive chunk), jobpool itself with
# its defaults (adaptive chunks). A row per setting, and one per implementation at its best.
IMPLS = [
    "jobpool[thread]",
    "mp.ThreadPool",
    "jobpool[process]",
    "mp.Pool",
    "cf.ProcessPoolExecutor",
    "loky",
    "mpire",
]
REPS = 2
SKIPPED = {
    "cf.ThreadPoolExecutor": "not run: its map() submits the whole input at once "
    "(peers.md: 3.3 GB and 43 s over 2M items)",
}


def _settings(impl: str) -> list[Optional[int]]:
    if impl.startswith("jobpool"):
        return [None]
    return [LAZY_CHUNK, SWEEP_CHUNK]


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    if quick:
        params = {"n": 20_000, "stall_n": 5_000, "stall_s": 0.2}
        return [
            Task(NAME, impl, {**params, "chunksize": _settings(impl)[0]}, timeout=60)
            for impl in IMPLS[:4]
        ]
    params = {"n": 2_000_000, "stall_n": 500_000, "stall_s": 1.0}
    return [  # round-robin, so load from other users of the machine hits every impl alike
        Task(NAME, impl, {**params, "chunksize": size}, timeout=150)
        for _ in range(REPS)
        for impl in IMPLS
        for size in _settings(impl)
    ]


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    pulled = [0]

    def generate(n: int) -> Iterator[int]:
        for i in range(n):
            pulled[0] += 1
            yield i

    chunksize = params.get("chunksize")
    adapter = make(impl)
    adapter.open(WORKERS)
    try:
        adapter.warm(inc, WORKERS)
        gc.collect()
        n = params["n"]
        base = current_rss()
        consumed = 0
        first_ahead = max_ahead = 0
        with PeakRss() as rss:
            start = time.perf_counter()
            for _ in adapter.lazy_map(identity, generate(n), chunksize):
                consumed += 1
                if consumed == 1:
                    first_ahead = pulled[0] - 1
                if consumed % 1000 == 0:
                    max_ahead = max(max_ahead, pulled[0] - consumed)
            wall = time.perf_counter() - start
        assert consumed == n, (consumed, n)

        pulled[0] = 0
        results = adapter.lazy_map(identity, generate(params["stall_n"]), chunksize)
        iterator = iter(results)
        for _ in range(100):
            next(iterator)
        time.sleep(params["stall_s"])
        after_1 = pulled[0]
        time.sleep(params["stall_s"])
        after_2 = pulled[0]
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    finally:
        adapter.close()
    out = row(
        impl if chunksize is None else f"{impl} [cs={chunksize}]",
        adapter.flavour,
        adapter.lazy_api,
        items_per_s=[n / wall],
        wall_s=[wall],
        rss_growth_mb=[(rss.peak - base) / 2**20],
        first_read_ahead=[float(first_ahead)],
        max_read_ahead=[float(max_ahead)],
        stall_pulled=[float(after_2)],
    )
    out["info"] = {
        "stall": f"{after_1:,} -> {after_2:,} of {params['stall_n']:,}",
        "lazy": after_2 < 0.1 * params["stall_n"],
    }
    return [out]


def derive(rows: list[dict[str, Any]], params: dict[str, Any]) -> None:
    """Add one row per implementation tried with several chunk sizes: its best, by items/s."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        impl, tried, _ = r["impl"].partition(" [cs=")
        if not tried:
            continue
        score = statistics.median(r["metrics"].get("items_per_s") or [0.0])
        if impl not in best or score > statistics.median(best[impl]["metrics"]["items_per_s"]):
            best[impl] = r
    for impl, r in best.items():
        setting = r["impl"].partition(" [cs=")[2].rstrip("]")
        summary = row(impl, r["flavour"], f"{r['api']} best: cs={setting}", **r["metrics"])
        summary["info"] = dict(r["info"])
        rows.append(summary)
