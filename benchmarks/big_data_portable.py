#!/usr/bin/env python
"""The big_data workload's 32 MB x 8 case for jobpool, jobpool in portable mode and mp.Pool.

    python benchmarks/big_data_portable.py            # 2 rounds, alternating order
    python benchmarks/big_data_portable.py --rounds 4

The same code as ``benchmarks/run.py --only big_data`` (each implementation in a child process
of its own, ``jobpool[process, portable]`` started with ``JOBPOOL_PORTABLE=1``), restricted to
the case and the implementations of issue 29's goal, so that it takes a minute instead of the
whole workload's quarter of an hour: at least 3x ``multiprocessing.Pool`` each way without
memfd. Prints medians and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import Task  # noqa: E402
from benchmarks.run import run_task  # noqa: E402

MB = 1 << 20
CASE = ("32 MB x 8", 32 * MB, 8, 3)
IMPLS = ["jobpool[process]", "jobpool[process, portable]", "mp.Pool"]
METRICS = ("arguments_mb_s", "results_mb_s", "parent_peak_arguments_mb", "parent_peak_results_mb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    samples: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        for impl in IMPLS if round_ % 2 == 0 else IMPLS[::-1]:
            rows, note = run_task(Task("big_data", impl, {"cases": [CASE]}, timeout=900))
            if note:
                sys.exit(f"{impl}: {note}")
            for row in rows:
                for metric, values in row["metrics"].items():
                    samples.setdefault((impl, metric), []).extend(values)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    print(f"big_data, {CASE[0]}, medians of {args.rounds} rounds")
    print("| | arguments MB/s | results MB/s | parent peak MB (arguments / results) |")
    print("|---|---|---|---|")
    for impl in IMPLS:
        a, r, pa, pr = (medians[(impl, metric)] for metric in METRICS)
        print(f"| {impl} | {a:,.0f} | {r:,.0f} | {pa:,.0f} / {pr:,.0f} |")
    for impl in IMPLS[:2]:
        ratios = [medians[(impl, m)] / medians[("mp.Pool", m)] for m in METRICS[:2]]
        print(f"| {impl} vs mp.Pool | {ratios[0]:.2f}x | {ratios[1]:.2f}x | |")


if __name__ == "__main__":
    main()
