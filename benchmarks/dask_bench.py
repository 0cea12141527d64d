#!/usr/bin/env python
"""What the Dask backend costs next to the process backend, on one machine.

    python benchmarks/dask_bench.py            # about a minute on 2 cores
    python benchmarks/dask_bench.py --quick    # smoke run for CI: tiny sizes, a few seconds

Both pools get the same number of workers; the Dask pool starts its own ``LocalCluster`` of
worker processes on loopback (as ``Pool(backend="dask")`` does). Prints one markdown table:
start-up, per-job overhead (one job at a time, and a burst of jobs), ``map`` throughput on tiny
items and on jobs that do real work, and the ratio Dask / process for each (above 1: Dask is
slower). Standalone: needs jobpool and ``distributed`` only.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any, Callable

from jobpool import Pool


def noop(x: Any = None) -> Any:
    return x


def busy(seconds: float) -> float:
    """Compute (not sleep) for about ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def measure(pool: Pool, sizes: dict[str, int]) -> dict[str, float]:
    results: dict[str, float] = {}

    start = time.perf_counter()
    for i in range(sizes["roundtrip"]):
        assert pool.submit(noop, i).result() == i
    results["roundtrip"] = (time.perf_counter() - start) / sizes["roundtrip"] * 1e3

    start = time.perf_counter()
    futures = [pool.submit(noop, i) for i in range(sizes["burst"])]
    assert [f.result() for f in futures] == list(range(sizes["burst"]))
    results["burst"] = sizes["burst"] / (time.perf_counter() - start)

    start = time.perf_counter()
    assert sum(pool.map(noop, range(sizes["map"]))) == sum(range(sizes["map"]))
    results["map"] = sizes["map"] / (time.perf_counter() - start)

    start = time.perf_counter()
    list(pool.map(busy, [0.01] * sizes["work"], chunksize=1))
    results["work"] = time.perf_counter() - start
    return results


def run(backend: str, workers: int, sizes: dict[str, int]) -> dict[str, float]:
    start = time.perf_counter()
    with Pool(workers, backend=backend) as pool:
        pool.submit(noop).result()
        startup = time.perf_counter() - start
        results = measure(pool, sizes)
    results["startup"] = startup
    results["total"] = time.perf_counter() - start
    return results


ROWS: list[tuple[str, str, Callable[[float], str], bool]] = [
    # key, title, format, higher is better
    ("startup", "start-up: Pool() to first result", lambda v: f"{v:.2f} s", False),
    ("roundtrip", "one job at a time: submit -> result", lambda v: f"{v:.2f} ms/job", False),
    ("burst", "burst: submit N no-op jobs, wait for all", lambda v: f"{v:,.0f} jobs/s", True),
    ("map", "map over tiny items (adaptive chunks)", lambda v: f"{v:,.0f} items/s", True),
    ("work", "map over 10 ms CPU jobs, chunksize=1", lambda v: f"{v:.2f} s", False),
    ("total", "whole run, shutdown included", lambda v: f"{v:.2f} s", False),
]


def table(sizes: dict[str, int], process: dict[str, float], dask: dict[str, float]) -> str:
    lines = [
        "| measurement | process | dask | dask / process (time) |",
        "| --- | --- | --- | --- |",
    ]
    for key, title, fmt, higher_is_better in ROWS:
        # The ratio is always "how many times longer Dask takes": >1 means Dask is slower.
        ratio = process[key] / dask[key] if higher_is_better else dask[key] / process[key]
        n = sizes.get(key)
        label = f"{title} (N={n:,})" if n else title
        lines.append(f"| {label} | {fmt(process[key])} | {fmt(dask[key])} | {ratio:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run for CI")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    try:
        import distributed
    except ImportError:
        print('needs the distributed package: pip install "jobpool[dask]"', file=sys.stderr)
        return 2
    if args.quick:
        sizes = {"roundtrip": 20, "burst": 100, "map": 2_000, "work": 8}
    else:
        sizes = {"roundtrip": 300, "burst": 3_000, "map": 200_000, "work": 200}
    process = run("process", args.workers, sizes)
    dask = run("dask", args.workers, sizes)
    print(
        f"Python {platform.python_version()}, distributed {distributed.__version__}, "
        f"{os.cpu_count()} CPU(s), {args.workers} workers"
        + (" (--quick: sizes too small to mean much)" if args.quick else "")
    )
    print()
    print(table(sizes, process, dask))
    return 0


if __name__ == "__main__":
    sys.exit(main())
