#!/usr/bin/env python
"""Draw the big_data workload of a results file as a bar chart (the performance page's figure).

    python benchmarks/plot_big_data.py                       # benchmarks/results.json
    python benchmarks/plot_big_data.py --json r.json --out docs/img/big_data.png

One panel per direction (arguments, results); in each, one group of bars per case (array size x
jobs) and one bar per pool, MB/s, medians of the run; the dashed line is the memcpy floor of
that case. Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOOR = "floor: one memcpy"
PANELS = [("arguments_mb_s", "arguments"), ("results_mb_s", "results")]


def medians(results: dict[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], Any]]:
    """(cases, pools, {(pool, case): summary}) of the big_data workload, in run order."""
    rows = results["workloads"]["big_data"]["rows"]
    cases: list[str] = []
    pools: list[str] = []
    table: dict[tuple[str, str], Any] = {}
    for r in rows:
        pool, case = r["impl"].rsplit(" | ", 1)
        if case not in cases:
            cases.append(case)
        if pool not in pools and pool != FLOOR:
            pools.append(pool)
        table[pool, case] = r["summary"]
    return cases, pools, table


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases, pools, table = medians(results)
    meta = results.get("meta", {})
    meta = meta.get("workload_runs", {}).get("big_data", meta)  # merged from its own run
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    width = 0.8 / max(1, len(pools))
    for ax, (metric, title) in zip(axes, PANELS):
        for i, pool in enumerate(pools):
            values = [table.get((pool, c), {}).get(metric, {}).get("median") or 0 for c in cases]
            xs = [k + (i - (len(pools) - 1) / 2) * width for k in range(len(cases))]
            bars = ax.bar(xs, values, width, label=pool)
            if pool.startswith("jobpool"):
                for bar in bars:
                    bar.set_edgecolor("black")
                    bar.set_linewidth(1.2)
        for k, case in enumerate(cases):
            floor = table.get((FLOOR, case), {}).get(metric, {}).get("median")
            if floor:
                label = "one memcpy (floor)" if k == 0 else None
                ax.hlines(floor, k - 0.45, k + 0.45, colors="grey", linestyles="--", label=label)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases)
        ax.set_title(f"large arrays as {title}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("MB/s (higher is better)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels), frameon=False)
    figure.suptitle(
        f"float64 arrays through a 2-worker pool - Python {meta.get('python', '?')}, "
        f"{meta.get('cpu_count', '?')} CPUs, {meta.get('started_utc', '')} UTC",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results.json"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "img" / "big_data.png"))
    args = parser.parse_args(argv)
    results = json.loads(Path(args.json).read_text())
    if "big_data" not in results.get("workloads", {}):
        print(f"{args.json} has no big_data workload: run benchmarks/run.py first", file=sys.stderr)
        return 1
    plot(results, Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
