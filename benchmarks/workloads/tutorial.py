"""The tutorial's own script, ``multiprocessing`` against ``jobpool.multiprocessing``.

``benchmarks/tutorial_script.py`` is run as a user runs it: a fresh interpreter for every run,
the variants alternating (each round in the reverse order of the one before), medians over the
rounds. The variants: the standard library with its default start method (fork on Linux before
Python 3.14), jobpool with its default (forkserver), and the standard library told to use
forkserver too. Each part is timed by the script itself, from making the pool of 50 to
``join()``; ``total`` is their sum. Bytecode is compiled first (``run.py`` does it for jobpool,
as ``pip install`` would), so no run pays for compiling a module.

Run alone: ``python benchmarks/run.py --only tutorial --json /tmp/tutorial.json`` prints the
table and the verdicts (two rows of the goals table).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from ..common import Task, row

NAME = "tutorial"
TITLE = (
    "the tutorial script (pools of 50; 300 file jobs, 2,000 squares; apply_async + get), "
    "seconds per part, fresh interpreter per run"
)
PARTS = ("thread file", "thread squares", "process file", "process squares", "total")
COLUMNS = [(part, f"{part} s", "{:.3f}") for part in PARTS]
PRIMARY = "total"
HIGHER_IS_BETTER = False
STDLIB = "multiprocessing"
JOBPOOL = "jobpool.multiprocessing"
STDLIB_FORKSERVER = "multiprocessing @forkserver"
# variant -> the script's arguments
VARIANTS = {
    STDLIB: ["multiprocessing"],
    JOBPOOL: ["jobpool"],
    STDLIB_FORKSERVER: ["std", "forkserver"],
}
SCRIPT = Path(__file__).resolve().parent.parent / "tutorial_script.py"


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    return [Task(NAME, "all", {"rounds": 1 if quick else 7}, timeout=900)]


def run_script(args: list[str], script: Path = SCRIPT) -> dict[str, float]:
    """One fresh interpreter running ``script``; the seconds it printed (each part's)."""
    tmp = tempfile.mkdtemp(prefix="jobpool-tutorial-")
    env = dict(os.environ, TMPDIR=tmp)  # the script's files go there, removed after
    try:
        done = subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} {args} failed: {done.stderr.strip()[-300:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_variants(script: Path, columns: list[str], rounds: int) -> list[dict[str, Any]]:
    """``script`` under each of ``VARIANTS``, a fresh interpreter per run, alternating (each
    round in the reverse order of the one before); a row per variant, against the stdlib's."""
    samples: dict[str, dict[str, list[float]]] = {
        variant: {column: [] for column in columns} for variant in VARIANTS
    }
    order = list(VARIANTS)
    for r in range(rounds):
        for variant in order if r % 2 == 0 else order[::-1]:
            for column, seconds in run_script(VARIANTS[variant], script).items():
                samples[variant][column].append(seconds)
    rows = []
    for variant in order:
        method = "forkserver" if variant != STDLIB else "default"
        r = row(variant, "process", f"start method: {method}", **samples[variant])
        r["ref"] = STDLIB
        rows.append(r)
    return rows


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return run_variants(SCRIPT, list(PARTS), params["rounds"])


def goals(w: dict[str, Any]) -> list[dict[str, Any]]:
    """jobpool at most 1.0x the standard library in total and on each process part; ahead of
    the standard library on the same start method (forkserver) in total."""
    from .. import report

    parts = ("total", "process file", "process squares")
    mine = {p: report._get(w, NAME, JOBPOOL, p) for p in parts}
    std = {p: report._get(w, NAME, STDLIB, p) for p in parts}
    same = report._get(w, NAME, STDLIB_FORKSERVER, "total")
    ratios = {p: report._ratio(mine[p], std[p]) for p in parts}
    measured = "; ".join(
        f"{p} {report._fmt(mine[p], '{:.3f}')} vs {report._fmt(std[p], '{:.3f}')} s = "
        f"{report._fmt(ratios[p], '{:.2f}')}x"
        for p in parts
    )
    met: Optional[bool] = None
    if all(ratios[p] is not None for p in parts):
        met = all(ratios[p] <= 1.0 for p in parts)  # type: ignore[operator]
    ahead = report._ratio(mine["total"], same)
    return [
        report._goal(
            "tutorial script, jobpool.multiprocessing vs multiprocessing",
            "<= 1.0x the stdlib's default (fork), in total and on each process part",
            measured,
            met,
        ),
        report._goal(
            "tutorial script on the same start method",
            "total < 0.8x the stdlib on forkserver",
            f"{report._fmt(mine['total'], '{:.3f}')} vs {report._fmt(same, '{:.3f}')} s = "
            f"{report._fmt(ahead, '{:.2f}')}x",
            None if ahead is None else ahead < 0.8,
        ),
    ]
