"""How much of a CPU a worker wants: the share of the time its jobs ran or waited to run.

Why the pool asks: a worker started while the running ones already keep every CPU busy adds
no speed to short jobs that need CPUs (there is none left to give it), yet its start costs
several milliseconds of CPU that those jobs then lack. ``Pool(processes=50)`` running 300
jobs of 100 microseconds on 2 cores finishes sooner with 2 workers than with 8. But a worker
whose jobs wait on files, sockets or sleeps leaves its CPU to others, and another worker then
does add speed. Which of the two it is, the parent cannot tell from job times: the kernel can.

On Linux, ``/proc/<pid>/schedstat`` gives the nanoseconds a task spent running and waiting in
the run queue. Both count as wanting a CPU: on a busy machine a worker that waits for a CPU
would not run sooner beside one more process. Its main thread (the one that runs the jobs)
is the task read. Where there is no /proc (or ``JOBPOOL_PORTABLE=1`` turns it off), or the
kernel keeps no such counts, nothing is known, and the pool grows as it would without this.
"""

from __future__ import annotations

from typing import Optional

from .. import _platform

# A worker's share is measured again at most this often (a read is a few system calls) and
# over at least this long a window once it has a share.
SAMPLE_SECONDS = 0.01
# The workers want every CPU once their shares add up to this part of the CPUs there are (the
# parent's own threads take some of the time: workers that want all of it never show 1.0 each).
TAKEN = 0.75


def runnable_ns(pid: int) -> Optional[int]:
    """Nanoseconds the process's main thread has run or waited to run (schedstat), or None:
    no /proc here, the process is gone, or the kernel keeps no such counts."""
    if not _platform.PROC:
        return None
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as file:
            fields = file.read().split()
        ran, waited = int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None
    return ran + waited


class CpuDemand:
    """One worker's recent demand for a CPU (its handle holds it; the dispatcher asks)."""

    __slots__ = ("_at", "_ns", "_pid", "_share")

    def __init__(self, pid: Optional[int], now: float) -> None:
        self._pid = pid
        self._at = now
        # None: never read, or nothing to read (then it stays unknown).
        self._ns = None if pid is None else runnable_ns(pid)
        self._share: Optional[float] = None

    def share(self, now: float) -> Optional[float]:
        """The part of the time since the last reading that the worker ran or waited to run
        (0 to 1), read again once that reading is ``SAMPLE_SECONDS`` old; None if unknown."""
        if self._ns is None or self._pid is None:
            return None
        if self._share is not None and now - self._at < SAMPLE_SECONDS:
            return self._share
        ns = runnable_ns(self._pid)
        if ns is None:
            self._ns = None
            return None
        elapsed = now - self._at
        if elapsed > 0:
            self._share = max(0.0, min(1.0, (ns - self._ns) / 1e9 / elapsed))
            self._at, self._ns = now, ns
        return self._share


def cpus_taken(shares: list[Optional[float]], starting: int, cpus: int) -> bool:
    """Whether the workers holding jobs (``shares``, their demand) and those ``starting``
    (each wants a CPU while it starts) already want every one of the ``cpus``: then one more
    would only share them. False when any share is unknown (see the module doc)."""
    if len(shares) + starting < cpus:
        return False
    total = float(starting)
    for share in shares:
        if share is None:
            return False
        total += share
    return total >= TAKEN * cpus
