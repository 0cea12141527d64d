"""Fifty workers at once: ``Pool(processes=50)`` running 50 jobs that each sleep half a second.

``benchmarks/fifty_script.py`` is run as a user runs it, a fresh interpreter for every run,
the variants alternating (each round in the reverse order of the one before), medians over the
rounds: the standard library with its default start method (fork on Linux before Python
3.14), ``jobpool.multiprocessing`` with its default (forkserver), and the standard library on
forkserver. The measure is the time from making the pool to the last result less the half
second each job sleeps: what bringing up fifty workers cost before all the jobs could run.

Run alone: ``python benchmarks/run.py --only fifty --json /tmp/fifty.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from ..common import Task, row

NAME = "fifty"
TITLE = (
    "fifty workers at once: Pool(processes=50), 50 jobs of sleep(0.5 s), apply_async + get; "
    "seconds beyond the half second, fresh interpreter per run"
)
COLUMNS = [("bring_up", "bring-up s", "{:.3f}"), ("total", "total s", "{:.3f}")]
PRIMARY = "bring_up"
HIGHER_IS_BETTER = False
STDLIB = "multiprocessing"
JOBPOOL = "jobpool.multiprocessing"
STDLIB_FORKSERVER = "multiprocessing @forkserver"
VARIANTS = {
    STDLIB: ["multiprocessing"],
    JOBPOOL: ["jobpool"],
    STDLIB_FORKSERVER: ["std", "forkserver"],
}
SCRIPT = Path(__file__).resolve().parent.parent / "fifty_script.py"


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    return [Task(NAME, "all", {"rounds": 1 if quick else 7}, timeout=600)]


def run_script(args: list[str]) -> dict[str, float]:
    """One fresh interpreter running the script; its seconds."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"fifty script {args} failed: {done.stderr.strip()[-300:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    samples: dict[str, dict[str, list[float]]] = {
        variant: {column: [] for column, _, _ in COLUMNS} for variant in VARIANTS
    }
    order = list(VARIANTS)
    for r in range(params["rounds"]):
        for variant in order if r % 2 == 0 else order[::-1]:
            for column, seconds in run_script(VARIANTS[variant]).items():
                samples[variant][column].append(seconds)
    rows = []
    for variant in order:
        method = "forkserver" if variant != STDLIB else "default"
        r = row(variant, "process", f"start method: {method}", **samples[variant])
        r["ref"] = STDLIB
        rows.append(r)
    return rows


def goals(w: dict[str, Any]) -> list[dict[str, Any]]:
    """Fifty workers up no slower than the standard library forks them (issue 27)."""
    from .. import report

    mine = report._get(w, NAME, JOBPOOL, PRIMARY)
    std = report._get(w, NAME, STDLIB, PRIMARY)
    same = report._get(w, NAME, STDLIB_FORKSERVER, PRIMARY)
    ratio = report._ratio(mine, std)
    met: Optional[bool] = None if ratio is None else ratio <= 1.0
    return [
        report._goal(
            "fifty workers brought up at once",
            "<= 1.0x the stdlib's default (fork), seconds beyond the jobs' own half second",
            f"{report._fmt(mine, '{:.3f}')} vs {report._fmt(std, '{:.3f}')} s = "
            f"{report._fmt(ratio, '{:.2f}')}x (stdlib on forkserver "
            f"{report._fmt(same, '{:.3f}')} s)",
            met,
        )
    ]
