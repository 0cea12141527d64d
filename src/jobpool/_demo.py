"""``python -m jobpool demo``: threads or processes? Measured on the user's own machine.

Two kinds of job, each measured one at a time, on threads and on processes: jobs that wait (as on
a network or a disk) and jobs that compute in pure Python (holding the GIL). The measuring is
``advise``'s (``_advise.advise``): per-call times with the time spent waiting for a CPU that
other programs held (schedstat) and the time a virtual machine's host held the CPUs back
(steal) taken out, so that a busy machine lowers the measured speeds but not the verdict.

A verdict is given only once two measurements in a row agree; until then the measuring goes on,
within a time budget. If the budget runs out first, the demo says that it cannot tell, rather
than print the verdict of one disturbed run. ``--quick`` measures shorter batches with the same
jobs and the same rule, so it reaches the same verdicts.
"""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, TextIO

from ._advise import Advice, advise, usable_cpus

#: How long one waiting job waits, and about how much CPU time one computing job takes: long
#: enough that starting a job (~0.1 ms on processes) is small beside it.
WAIT_SECONDS = 0.05
CPU_SECONDS = 0.03
#: Serial seconds per measurement, and the most seconds spent on one kind of job.
BUDGETS = {False: (1.0, 75.0), True: (0.4, 30.0)}
#: Output lines are wrapped at this width.
WIDTH = 96
#: Measurements in a row that must agree before a verdict is given.
AGREEING = 2


def io_job(seconds: float) -> float:
    """Stands for a network call or a disk read: the GIL is released while it waits."""
    time.sleep(seconds)
    return seconds


def cpu_job(n: int) -> int:
    """Pure-Python arithmetic: holds the GIL the whole time."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def steps_for(cpu_seconds: float) -> int:
    """How many steps of :func:`cpu_job` take about ``cpu_seconds`` of CPU time here."""
    n = 20_000
    while True:
        start = time.thread_time()
        cpu_job(n)
        used = time.thread_time() - start
        if used >= cpu_seconds / 4 or n >= 50_000_000:
            return max(1000, int(n * cpu_seconds / max(used, 1e-6)))
        n *= 4


@dataclass
class Kind:
    """One kind of job and what the measurements said about it."""

    name: str  # "waiting jobs"
    what: str  # how the table shows it
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    advice: list[Advice] = field(default_factory=list)
    verdict: Optional[str] = None  # "thread", "process", "serial"; None: cannot tell


class Progress:
    """One line on stderr saying what is being measured; rewritten in place on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._width = 0
        self._prefix = ""

    def begin(self, prefix: str) -> None:
        self._prefix = prefix
        if not self._tty:
            print(f"measuring {prefix}...", file=self._stream, flush=True)

    def step(self, what: str) -> None:
        if self._tty:
            line = f"measuring {self._prefix}: {what}..."
            self._stream.write("\r" + line.ljust(self._width))
            self._stream.flush()
            self._width = len(line)

    def end(self) -> None:
        if self._tty and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0


def settle(
    kind: Kind, budget: float, limit: float, workers: Optional[int], progress: Progress
) -> None:
    """Measure ``kind`` until :data:`AGREEING` measurements in a row agree, or ``limit`` s pass."""
    deadline = time.monotonic() + limit
    while True:
        count = len(kind.advice) + 1
        progress.begin(f"{kind.name} (measurement {count})")
        kind.advice.append(
            advise(kind.fn, kind.args, budget=budget, workers=workers, on_batch=progress.step)
        )
        progress.end()
        last = [advice.backend for advice in kind.advice[-AGREEING:]]
        if len(last) == AGREEING and len(set(last)) == 1:
            kind.verdict = last[0]
            return
        # Stop if another measurement, as long as the last one, would end past the deadline.
        spent = time.monotonic() - (deadline - limit)
        if time.monotonic() + spent / count > deadline:
            return


def run_demo(
    workers: Optional[int] = None, quick: bool = False, progress_stream: Optional[TextIO] = None
) -> int:
    cpus = usable_cpus()
    budget, limit = BUDGETS[quick]
    progress = Progress(progress_stream or sys.stderr)
    print("jobpool demo: should your jobs run on threads or on processes?")
    print(
        textwrap.fill(
            f"This machine lets Python use {cpus} CPU(s). Two kinds of job run one at a time, "
            "then on threads and on processes, until two measurements in a row give the same "
            f"answer ({'about 10-30 s' if quick else 'about 20-60 s'}).",
            WIDTH,
        )
        + "\n",
        flush=True,
    )
    kinds = [
        Kind("waiting jobs", f"waiting {WAIT_SECONDS * 1e3:.0f} ms (like a download)", io_job,
             (WAIT_SECONDS,)),
        Kind("computing jobs", "computing in pure Python", cpu_job, (steps_for(CPU_SECONDS),)),
    ]  # fmt: skip
    for kind in kinds:
        settle(kind, budget, limit, workers, progress)
    print(format_table(kinds))
    print()
    busy = max(advice.busy for kind in kinds for advice in kind.advice)
    if busy > 0.1:
        print(
            textwrap.fill(
                f"Other programs kept this machine busy: jobs waited up to {busy:.0%} of their "
                "time for a CPU. The speeds in brackets leave that wait out (what a quiet "
                "machine would give); the verdicts use them.",
                WIDTH,
            )
            + "\n"
        )
    for kind in kinds:
        print(textwrap.fill(f"{kind.name}: {verdict(kind)}", WIDTH, subsequent_indent="  "))
    return 0


def _speed(value: float) -> str:
    return f"{value:.1f}x"


def format_table(kinds: list[Kind]) -> str:
    """The last measurement of each kind: one job's time, and speeds (one at a time = 1)."""
    rows: list[tuple[str, ...]] = [("kind of job", "one job", "on threads", "on processes")]
    for kind in kinds:
        advice = kind.advice[-1]
        cells = [kind.what, f"{advice.call_wall * 1e3:.0f} ms"]
        for backend in ("thread", "process"):
            runs = [run for run in advice.runs if run.backend == backend]
            if not runs:
                cells.append("-")
                continue
            best = max(runs, key=lambda run: run.estimate)
            cells.append(f"{best.workers:>2} x {_speed(best.speedup):>6} ({_speed(best.estimate)})")
        rows.append(tuple(cells))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append(
        "speeds: how many times as fast as one job at a time, measured (and on a quiet machine)"
    )
    return "\n".join(lines)


def verdict(kind: Kind) -> str:
    """The verdict line for ``kind``, in words that hold for the numbers shown."""
    answers = ", ".join(advice.backend for advice in kind.advice)
    if kind.verdict is None:
        return (
            f"cannot tell: {len(kind.advice)} measurements disagreed ({answers}), because other "
            "programs on this machine changed its speed while it measured; run the demo again "
            "when it is quieter"
        )
    advice = kind.advice[-1]
    if kind.verdict == "serial":
        return (
            "neither pool runs these jobs faster than one at a time here "
            f"({len(kind.advice)} measurements agreed); {advice.reasons[0]}"
        )
    best = max((run for run in advice.runs if run.backend == kind.verdict), key=_estimate)
    how = f"{best.workers} {'threads' if kind.verdict == 'thread' else 'processes'}"
    if kind.verdict == "thread":
        why = "the jobs wait, and waiting lets other threads run, so many threads overlap cheaply"
    else:
        why = (
            "the jobs compute in Python and hold the GIL, so threads take turns; separate "
            "processes run them at the same time, one per CPU"
        )
    return (
        f"use backend={kind.verdict!r}. {how} would run them {best.estimate:.1f} times as fast "
        f"as one at a time on a quiet machine: {why} ({len(kind.advice)} measurements agreed)."
    )


def _estimate(run: Any) -> float:
    return float(run.estimate)
