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

from pathlib import Path
from typing import Any, Optional

from ..common import Task
from .tutorial import JOBPOOL, STDLIB, STDLIB_FORKSERVER, run_variants

NAME = "fifty"
TITLE = (
    "fifty workers at once: Pool(processes=50), 50 jobs of sleep(0.5 s), apply_async + get; "
    "seconds beyond the half second, fresh interpreter per run"
)
COLUMNS = [("bring_up", "bring-up s", "{:.3f}"), ("total", "total s", "{:.3f}")]
PRIMARY = "bring_up"
HIGHER_IS_BETTER = False
SCRIPT = Path(__file__).resolve().parent.parent / "fifty_script.py"


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    return [Task(NAME, "all", {"rounds": 1 if quick else 7}, timeout=600)]


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The tutorial's variants and alternation (``tutorial.run_variants``), this script."""
    return run_variants(SCRIPT, [column for column, _, _ in COLUMNS], params["rounds"])


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
