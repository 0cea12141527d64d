#!/usr/bin/env python
"""What the memory options cost per job, and how far past its limit a fast job gets.

    python benchmarks/memory_bench.py            # about a minute on 2 cores
    python benchmarks/memory_bench.py --quick    # smoke run: tiny sizes, a few seconds

1. **Per-job overhead.** One warmed 2-worker process pool without the options and one with
   ``job_memory_limit="1 GiB"`` and ``max_worker_memory="1 GiB"`` (the limit held by the
   worker's memory cgroup where one can be made, else sampled), taking turns at going first:
   ``--jobs`` trivial jobs submitted, then all awaited (us per job), ``--repeats`` times each.
   The same again with the limit sampled (no cgroup). Goal: each within 5% of the pool without.
2. **Overshoot.** One job allocates in 4 MB steps (each touched) at ~500 MB/s, and one as fast
   as it can, under a 200 MiB limit; the job writes how much it holds after each step, so what
   it reached when it was stopped is its own count, not jobpool's; next to it, what jobpool saw
   the job's tree reach (``MemoryLimitError.reached``: the cgroup's peak, or the last sample),
   which includes the worker's interpreter. Goal: both under 1.25x the limit.

Standalone: needs only jobpool. Linux (cgroups and /proc).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import jobpool
import memory_jobs
from jobpool._process import _cgroups

MB = 1 << 20
LIMIT = 200 * MB


def plus_one(x: int) -> int:
    return x + 1


def per_job_us(pool: jobpool.Pool, jobs: int) -> tuple[float, float]:
    """(wall, the caller's CPU) in us per job: ``jobs`` submitted, then all awaited. The
    caller's CPU (its threads: the submitting one, the dispatcher) is where the options' work is
    done, and on a shared machine it is less disturbed by others than wall time."""
    start, cpu = time.perf_counter(), time.process_time()
    futures = [pool.submit(plus_one, i) for i in range(jobs)]
    for future in futures:
        future.result(60)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall / jobs * 1e6, cpu / jobs * 1e6


Samples = list[tuple[float, float]]


def overhead(jobs: int, repeats: int, sampled: bool) -> tuple[Samples, Samples]:
    """((wall, cpu) us per job without the options, with them), ``repeats`` each, in turns."""
    saved = _cgroups.controller
    if sampled:
        _cgroups.controller = lambda: None  # type: ignore[assignment]
    try:
        plain = jobpool.Pool(2, "process")
        limited = jobpool.Pool(2, "process", job_memory_limit="1 GiB", max_worker_memory="1 GiB")
        try:
            for pool in (plain, limited):
                per_job_us(pool, jobs)  # warm: workers started, functions shipped
            without: Samples = []
            with_: Samples = []
            for i in range(repeats):
                order = [(plain, without), (limited, with_)]
                for pool, into in order if i % 2 == 0 else reversed(order):
                    into.append(per_job_us(pool, jobs))
            return without, with_
        finally:
            plain.shutdown()
            limited.shutdown()
    finally:
        _cgroups.controller = saved


def overshoot(rate: Optional[float], sampled: bool) -> tuple[float, float, str]:
    """(what the job held when stopped / its limit, by its own count; what jobpool saw its
    tree reach / the limit (the worker's interpreter included); how it was stopped)."""
    saved = _cgroups.controller
    if sampled:
        _cgroups.controller = lambda: None  # type: ignore[assignment]
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            jobpool.Pool(1, "process", job_memory_limit=LIMIT) as pool,
        ):
            progress = os.path.join(tmp, "progress")
            future = pool.submit(memory_jobs.grow, 4 * LIMIT // MB, 4, rate, progress)
            try:
                future.result(60)
            except jobpool.MemoryLimitError as exc:
                how = "cgroup" if "cgroup (v" in exc.how else "sampled"
                seen = (exc.reached or 0) / LIMIT
            else:
                return float("nan"), float("nan"), "not stopped"
            with open(progress) as f:
                held = int(f.read())
            return held / LIMIT, seen, how
    finally:
        _cgroups.controller = saved


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    jobs, repeats = (500, 3) if args.quick else (args.jobs, args.repeats)
    control = _cgroups.controller()
    where = f"v{control.version} at {control.parent}" if control else "none"
    print(f"cgroups here: {where}")
    print(f"load average: {os.getloadavg()}")
    print()
    print(
        "| options | without: wall, caller CPU (us/job) | with: wall, caller CPU (us/job) "
        "| ratio wall (paired median, range) | ratio caller CPU | goal <= 1.05 |"
    )
    print("|---|---|---|---|---|---|")
    for sampled in [False, True] if control is not None else [True]:
        without, with_ = overhead(jobs, repeats, sampled)
        wall = sorted(w[0] / o[0] for o, w in zip(without, with_))
        cpu = sorted(w[1] / o[1] for o, w in zip(without, with_))
        name = "limit sampled" if sampled or control is None else "limit in a cgroup"
        verdict = "met" if statistics.median(wall) <= 1.05 else "NOT met"  # by wall time
        print(
            f"| {name} + max_worker_memory "
            f"| {_med(without, 0):.1f}, {_med(without, 1):.1f} "
            f"| {_med(with_, 0):.1f}, {_med(with_, 1):.1f} "
            f"| {statistics.median(wall):.3f} ({wall[0]:.2f}-{wall[-1]:.2f}) "
            f"| {statistics.median(cpu):.3f} ({cpu[0]:.2f}-{cpu[-1]:.2f}) | {verdict} |"
        )
    print()
    print(
        "| overshoot (200 MiB limit, 4 MB steps) | the job's own count / limit "
        "| the tree's peak as jobpool saw it / limit | stopped by | goal < 1.25 |"
    )
    print("|---|---|---|---|---|")
    for sampled in [False, True] if control is not None else [True]:
        for rate in (500.0, None):
            held, seen, how = overshoot(rate, sampled)
            speed = "~500 MB/s" if rate else "as fast as it can"
            verdict = "met" if max(held, seen) < 1.25 else "NOT met"
            print(
                f"| {speed}, {'sampled' if sampled else 'cgroup'} | {held:.3f} | {seen:.3f} "
                f"| {how} | {verdict} |"
            )
    return 0


def _med(samples: Samples, i: int) -> float:
    return statistics.median(s[i] for s in samples)


if __name__ == "__main__":
    sys.exit(main())
