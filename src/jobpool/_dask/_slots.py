"""Where the Dask backend's jobs run: ``workers`` slots shared out over the cluster's workers.

Why slots: a pool of ``workers`` promises that at most that many of its jobs run at once, and
the cluster may have more threads than that. Keeping only ``workers`` tasks on the cluster keeps
the promise but leaves every Dask worker idle for a scheduler round trip between two jobs: the
worker reports the end of one job to the scheduler, the scheduler tells the pool, the pool sends
the next job through the scheduler. So the pool gives each Dask worker a *quota* of slots (all
quotas add up to ``workers``, or to the cluster's threads if it has fewer), pins each task to one
worker, and lets a worker whose jobs are short hold a few more tasks than its quota: those wait
in that worker's own queue and start the moment a running one ends.

What holds the quota where a worker has more threads than slots is a Dask *resource* named after
the pool, set on that worker to its quota, and required by every task of the pool: Dask then
runs at most that many of them at once there, however many threads it has. A worker whose every
thread is a slot needs no resource: its threads are the bound.

Because a worker runs the pool's tasks in the order they were sent (Dask orders them by
submission, and a pinned task is never stolen), the first ``quota`` tasks of a worker are the
ones that may be running and the others are waiting behind them. That order needs each task
sent with ``fifo_timeout=0``: Dask's priority is (user priority, generation, order in the
graph), a generation lasts 100 ms by default, and a worker runs tasks of equal priority last in,
first out, so tasks sent within 100 ms of one another would run in reverse. A task with a priority
(``options(priority=)``, passed on as Dask's own) goes before the waiting ones of lower
priority, as the worker will run it. That is how the pool knows
when a job's time limit starts, and which jobs a worker that died had not started. The quotas go
one at a time to the worker holding the fewest (each Dask worker is a process with its own GIL),
and are shared out again when workers join or leave.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, Optional

from .._job import Job

# A worker holds tasks beyond its quota only while its recent jobs took less than this: longer
# jobs leave the round trip between two of them a small share of the time.
STAGE_BELOW_SECONDS = 0.5
# At most this many tasks wait per slot, however short the jobs: enough for the cluster to take
# tiny jobs in batches (measured: 8 leaves trivial jobs 1.6x slower than raw Dask, 32 on par).
MAX_AHEAD_PER_SLOT = 32
# Only jobs this small (arguments and function bytes) wait on a worker: the scheduler and the
# worker hold a waiting task's bytes, so large ones are sent when a slot is free.
MAX_WAITING_JOB_BYTES = 64 * 1024
# Weight of the newest job in a worker's running average of job times, and of the newest round
# trip in the pool's average.
JOB_TIME_WEIGHT = 0.25
ROUND_TRIP_WEIGHT = 0.25
# Before any job came back: a scheduler round trip on one machine.
FIRST_ROUND_TRIP_SECONDS = 0.005
# Take waiting tasks back from a worker whose running job has run this many times longer than
# its jobs usually take (and at least RECALL_MIN_SECONDS), while a slot elsewhere is free.
RECALL_FACTOR = 4.0
RECALL_MIN_SECONDS = 0.02


def may_wait(job: Job) -> bool:
    """Whether ``job`` is small enough to be sent to a worker before one of its slots is free."""
    serialized = job.serialized
    return serialized is not None and serialized.size() <= MAX_WAITING_JOB_BYTES


class Task:
    """One job of the pool on the cluster: the Dask future that runs it and where it stands."""

    __slots__ = ("deadline", "future", "job", "key", "running_since", "sent_at", "slots")

    def __init__(self, job: Job, key: str, future: Any, slots: WorkerSlots) -> None:
        self.job = job
        self.key = key
        self.future = future  # the distributed.Future
        self.slots = slots
        self.sent_at = time.monotonic()
        # When it reached a free slot (None while it waits behind others on its worker).
        self.running_since: Optional[float] = None
        self.deadline: Optional[float] = None


class WorkerSlots:
    """One Dask worker: the pool's quota of slots there and its tasks, in the order sent."""

    def __init__(self, address: str, nthreads: int) -> None:
        self.address = address
        self.nthreads = nthreads
        # Slots the pool may fill here now; ``wanted`` once the worker's resource says so.
        self.quota = 0
        self.wanted = 0
        # The pool's resource on this worker: None until it was ever needed.
        self.resource: Optional[int] = None
        self.tasks: deque[Task] = deque()
        self.job_seconds = math.inf  # running average; inf until a job came back from here
        self.recalling = False
        self.recalled_at = -math.inf

    @property
    def needs_resource(self) -> bool:
        """Whether Dask must be told the quota: fewer slots than threads, or told before."""
        return self.wanted < self.nthreads or self.resource is not None

    def running(self) -> Iterator[Task]:
        """The tasks that may be running: the first ``quota`` (or fewer) in the order sent."""
        for i, task in enumerate(self.tasks):
            if i >= self.quota:
                return
            yield task

    def waiting(self) -> list[Task]:
        return list(self.tasks)[self.quota :]

    def free_slots(self) -> int:
        return max(0, self.quota - len(self.tasks))

    def room(self, round_trip: float) -> int:
        """How many more tasks to send here: free slots, plus a few to wait if jobs are short."""
        if self.recalling or self.job_seconds >= STAGE_BELOW_SECONDS:
            return self.free_slots()
        per_slot = math.ceil(round_trip / max(self.job_seconds, 1e-6))
        ahead = self.quota * max(1, min(MAX_AHEAD_PER_SLOT, per_slot))
        return max(0, self.quota + ahead - len(self.tasks))

    def add(self, task: Task, now: float) -> None:
        tasks = self.tasks
        priority = task.job.priority
        if priority and len(tasks) > self.quota:
            # It waits here: the worker runs it before the waiting tasks of lower priority
            # (Dask orders a worker's tasks by priority, then by arrival).
            index = len(tasks)
            while index > self.quota and tasks[index - 1].job.priority < priority:
                index -= 1
            tasks.insert(index, task)
            return
        tasks.append(task)
        if len(tasks) <= self.quota:
            self._start(task, now)

    def remove(self, task: Task, now: float) -> None:
        """The task is done here (finished, failed, given up on): a waiting one moves up."""
        try:
            self.tasks.remove(task)
        except ValueError:
            return
        self.promote(now)

    def promote(self, now: float) -> None:
        """Start the clock of the tasks that moved into a slot (one ended, or the quota grew)."""
        for running in self.running():
            if running.running_since is None:
                self._start(running, now)

    def finished(self, seconds: float) -> None:
        """A job ran ``seconds`` on this worker: update the running average."""
        if self.job_seconds == math.inf:
            self.job_seconds = seconds
        else:
            self.job_seconds += (seconds - self.job_seconds) * JOB_TIME_WEIGHT

    def recall_at(self) -> Optional[float]:
        """When to take back the tasks waiting here, if any wait: a running job is overdue.

        Overdue means running ``RECALL_FACTOR`` times longer than this worker's jobs usually
        take; after a recall, as long again before the next one.
        """
        if self.recalling or len(self.tasks) <= self.quota:
            return None
        starts = [t.running_since for t in self.running() if t.running_since is not None]
        if not starts:
            return None
        limit = max(RECALL_MIN_SECONDS, RECALL_FACTOR * self.job_seconds)
        return max(min(starts), self.recalled_at) + limit

    def _start(self, task: Task, now: float) -> None:
        task.running_since = now
        if task.job.timeout is not None:
            task.deadline = now + task.job.timeout


def share_slots(current: dict[str, WorkerSlots], nthreads: dict[str, int], workers: int) -> None:
    """Give the pool's ``workers`` slots to the workers in ``nthreads`` (address -> threads).

    Existing quotas stay (a worker only loses slots when it leaves or has fewer threads); free
    slots go one at a time to the worker with the fewest, so jobs spread over processes.
    ``current`` must already hold an entry for every address in ``nthreads``.
    """
    for address, n in nthreads.items():
        slots = current[address]
        slots.nthreads = n
        slots.wanted = min(slots.wanted, n)
    total = sum(current[address].wanted for address in nthreads)
    while total < workers:
        candidates = [s for a in sorted(nthreads) if (s := current[a]).wanted < s.nthreads]
        if not candidates:
            return
        chosen = min(candidates, key=lambda s: (s.wanted, -(s.nthreads - s.wanted)))
        chosen.wanted += 1
        total += 1
