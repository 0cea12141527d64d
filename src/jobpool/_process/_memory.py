"""What the parent knows of one worker's memory: its job's limit, and the worker's own size.

A :class:`WorkerMemory` belongs to one ``WorkerHandle``, which alone calls it. It answers three
questions:

- **Is the running job over its ``job_memory_limit``?** Where a memory cgroup can be made
  (``_cgroups``), the worker is moved into one of its own at its first limited job and the
  kernel holds the job and its programs to the limit: they can never get past it. Elsewhere the
  dispatcher samples the job's process tree every :data:`SAMPLE_SECONDS` (the worker's private
  resident memory, less what it inherited from a ``fork`` caller, and that of every program
  below it, found again every
  :data:`RESCAN_SECONDS`) and kills the tree at the first sample over the limit; a job can then
  get past it by what it allocates in one interval (and a program it starts in the first
  :data:`RESCAN_SECONDS` of its life is counted from its next rescan).
- **Is the worker itself too big to take another job (``max_worker_memory``)?** Its private
  resident memory, read from ``/proc/<pid>/statm`` (resident minus shared: the pages of
  jobpool's shared-memory segments it maps, and of files and libraries, are shared and do not
  count), with one ``pread`` on a descriptor kept open (about 1 us). A worker started by
  ``fork`` holds the caller's pages as its own until one side writes them, so what it held when
  it was forked is not counted (``WorkerMemory.inherited``): that is the caller's memory.
- **Did the kernel's out-of-memory killer kill it?** The ``oom_kill`` counters of its cgroup and
  of the machine, compared with what they were when the worker started.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Optional

from .. import _platform
from .._errors import MemoryLimitError
from . import _cgroups
from ._tree import ProcInfo, children_by_parent, descendants

#: How often the dispatcher samples a running job's memory where no cgroup holds it.
SAMPLE_SECONDS = 0.01
#: How often the programs below a sampled worker are looked for again (a scan of /proc).
RESCAN_SECONDS = 0.1
#: Faster than a process can grow its resident memory: each new page is zeroed (or filled)
#: first, at most at the machine's memory bandwidth (tens of GB/s). ``max_worker_memory`` is
#: read after a job only once the time since the last reading, at this rate, could have taken
#: the worker past it.
MAX_GROWTH = 50e9

_log = logging.getLogger("jobpool")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def private_bytes(fd: int) -> Optional[int]:
    """Resident memory not shared (with files, libraries, shared memory) of the process whose
    ``/proc/<pid>/statm`` is open as ``fd``; None if it is gone."""
    try:
        fields = os.pread(fd, 128, 0).split()
        return (int(fields[1]) - int(fields[2])) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _process_private(pid: int) -> int:
    try:
        fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
    except OSError:
        return 0
    try:
        return private_bytes(fd) or 0
    finally:
        os.close(fd)


class ProcessListing:
    """One listing of /proc, made when a sample first needs it and shared by every worker
    sampled at the same time (a scan costs about a millisecond)."""

    def __init__(self) -> None:
        self._below: Optional[dict[int, list[ProcInfo]]] = None

    def below(self) -> dict[int, list[ProcInfo]]:
        if self._below is None:
            self._below = children_by_parent()
        return self._below


class WorkerMemory:
    """One worker's memory, as the parent watches it (see the module docstring)."""

    def __init__(self, pid: int, forked: bool = False) -> None:
        self.pid = pid
        self._statm: Optional[int] = None
        # Forked: the caller's memory it holds from the fork (its page tables are copied by the
        # time fork returns here), not counted against max_worker_memory.
        self.inherited = (self.own_bytes() or 0) if forked else 0
        self._size = 0  # its own memory when last read (max_worker_memory), and when
        self._sized_at = -math.inf
        self.cgroup: Optional[_cgroups.WorkerCgroup] = None
        self._tried_cgroup = False
        self._cgroup_failed = False  # it refused a limit: the worker is sampled instead
        self.limit: Optional[int] = None  # the running job's limit
        self.sampled = False  # the limit is held by sampling, not by a cgroup
        self.next_sample: Optional[float] = None
        self._tree: list[int] = []
        self._next_scan = 0.0
        self.reached = 0  # the most a sample saw during the running job
        self.notified = False  # its cgroup ran out of memory
        # The out-of-memory killer's counters when the worker started (to name its death). It
        # starts in the caller's group (and the fork server's, which is the caller's child).
        found = _cgroups.caller_cgroup() if _platform.PROC else None
        self._start_cgroup = found
        self._start_kills = None if found is None else _cgroups.oom_kills(*found)
        # The group's counter counts every kill of a process in it, by a group's limit or by
        # the machine running out; the machine's counter only where the group's is missing.
        self._start_system_kills = (
            _cgroups.system_oom_kills() if _platform.PROC and self._start_kills is None else None
        )

    # --- max_worker_memory --------------------------------------------------------------------

    def grown_bytes(self) -> Optional[int]:
        """The worker's own memory: its private resident memory, less what it inherited."""
        size = self.own_bytes()
        return None if size is None else size - self.inherited

    def over(self, most: int, now: float) -> bool:
        """Whether its own memory is over ``most`` bytes. Read only when it could be: not
        while the time since the last reading, at :data:`MAX_GROWTH` bytes a second, could not
        have brought it from what it was to ``most`` (tiny jobs then cost no reading)."""
        if (now - self._sized_at) * MAX_GROWTH < most - self._size:
            return False
        size = self.grown_bytes()
        if size is None:
            return False
        self._size, self._sized_at = size, now
        return size > most

    def own_bytes(self) -> Optional[int]:
        """The worker's private resident memory (see :func:`private_bytes`)."""
        if self._statm is None:
            try:
                self._statm = os.open(f"/proc/{self.pid}/statm", os.O_RDONLY)
            except OSError:
                return None
        return private_bytes(self._statm)

    # --- job_memory_limit ---------------------------------------------------------------------

    def job_starts(self, limit: Optional[int], now: float) -> Optional[MemoryLimitError]:
        """A job with ``limit`` starts; an error if it is over it before it began (a cgroup
        that cannot give back what the worker holds already)."""
        self.limit = limit
        self.reached = 0
        if limit is not None and not self._tried_cgroup:
            self._tried_cgroup = True
            control = _cgroups.controller()
            self.cgroup = None if control is None else control.make(self.pid)
        cgroup = self.cgroup
        if cgroup is not None and not self._cgroup_failed:
            self.sampled = False
            self.next_sample = None
            try:
                held = cgroup.set_limit(limit)
            except OSError as exc:  # the group refused the limit: sample from now on
                _log.warning(
                    "jobpool could not set a memory limit in cgroup %s (%s); it samples the "
                    "memory of worker %s instead",
                    cgroup.path,
                    exc,
                    self.pid,
                )
                self._cgroup_failed = True
                return self.job_starts(limit, now)
            if not held:
                assert limit is not None
                return MemoryLimitError(
                    limit,
                    cgroup.peak(),
                    "its worker already held more than that when the job started (memory left "
                    "by earlier jobs), and its memory cgroup could not give it back",
                )
            return None
        self.sampled = limit is not None
        self.next_sample = now if self.sampled else None
        self._next_scan = now
        return None

    def sample(self, now: float, listing: ProcessListing) -> Optional[MemoryLimitError]:
        """Sampled limit: the running job's tree now; an error if it is over its limit."""
        limit = self.limit
        if limit is None or not self.sampled:
            self.next_sample = None
            return None
        if now >= self._next_scan:
            self._tree = [info.pid for info in descendants(self.pid, (), listing.below())]
            self._next_scan = now + RESCAN_SECONDS
        # The worker's own (not what a fork worker shares with the caller), and each program's
        # private memory: a program forked from the worker counts the pages it still shares
        # with it twice, which stops it early rather than late.
        used = (self.grown_bytes() or 0) + sum(_process_private(pid) for pid in self._tree)
        self.reached = max(self.reached, used)
        self.next_sample = now + SAMPLE_SECONDS
        if used <= limit:
            return None
        return MemoryLimitError(
            limit,
            used,
            f"sampled every {SAMPLE_SECONDS * 1000:g} ms (no memory cgroup could be made here): "
            "the private resident memory of the worker and the programs below it",
        )

    def hit_limit(self) -> Optional[MemoryLimitError]:
        """The cgroup said it ran out of memory: the error for the running job, if limited."""
        cgroup = self.cgroup
        if cgroup is None:
            return None
        cgroup.take_notice()
        if self.limit is None or not cgroup.hit_own_limit():
            return None  # a group above it ran out (the caller's): not this job's limit
        self.notified = True
        return MemoryLimitError(self.limit, cgroup.reached, cgroup.how())

    # --- the end ------------------------------------------------------------------------------

    def exit_error(self) -> Optional[MemoryLimitError]:
        """The worker died by itself: the error if its cgroup's limit stopped it."""
        cgroup = self.cgroup
        if cgroup is None or self.limit is None:
            return None
        if not self.notified and not (cgroup.oom_kills() and cgroup.hit_own_limit()):
            return None
        return MemoryLimitError(self.limit, cgroup.reached, cgroup.how())

    def oom_killed(self) -> Optional[str]:
        """If the kernel's out-of-memory killer may have killed it: how that is known."""
        if self.cgroup is not None:
            kills = self.cgroup.oom_kills()
            if kills:
                return (
                    "the kernel's out-of-memory killer killed it: its own memory cgroup's "
                    f"oom_kill counter is {kills}"
                )
        found = self._start_cgroup
        if found is not None and self._start_kills is not None:
            kills = _cgroups.oom_kills(*found)
            if kills is not None and kills > self._start_kills:
                return (
                    "the kernel's out-of-memory killer most likely killed it: the oom_kill "
                    f"counter of its memory cgroup {found[1]} went from {self._start_kills} to "
                    f"{kills} while it ran (that counter is shared by every process in the group)"
                )
        system = _cgroups.system_oom_kills()
        start = self._start_system_kills
        if system is not None and start is not None and system > start:
            return (
                "the kernel's out-of-memory killer most likely killed it: the machine's "
                f"oom_kill counter (/proc/vmstat) went from {start} to {system} while it ran"
            )
        return None

    def close(self, killed: bool) -> None:
        """The worker is reaped: close what was opened, remove its cgroup."""
        if self._statm is not None:
            os.close(self._statm)
            self._statm = None
        if self.cgroup is not None:
            self.cgroup.remove(kill_left=killed)
