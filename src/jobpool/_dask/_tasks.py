"""ClusterTasks: the pool's tasks on the cluster, and every job the Dask dispatcher holds.

A task is held here from the moment it is sent until it is settled, timed out, killed, taken
back or lost with its worker (:meth:`ClusterTasks.drop`); it is in its worker's slots (see
:mod:`jobpool._dask._slots`) until it ends. The jobs, by future, are the ones on the cluster and
the ones given back and waiting to go again: ``Pool.kill()`` looks them up from its own thread,
so they change under a lock, with the sending of a job.

Everything else here runs in the dispatcher thread. This calls nothing above it; a kill
sends its bookkeeping to that thread through the inbox.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Optional

from .._errors import JobKilledError, JobTimeoutError
from .._job import Job, Outcomes
from ._in_worker import withdraw_tasks
from ._inbox import Inbox
from ._inputs import KeptResults
from ._slots import Task, WorkerSlots

_log = logging.getLogger("jobpool")

KILLED_WAITING = "job killed by Pool.kill() before it started on its Dask worker; it will not run"


class ClusterTasks:
    def __init__(self, client: Any, outcomes: Outcomes, inbox: Inbox) -> None:
        self._client = client
        self._outcomes = outcomes
        self._inbox = inbox
        self._by_key: dict[str, Task] = {}  # the tasks on the cluster now
        self._fetching: set[Task] = set()  # the ones that ended, their results on the way
        self._timed: set[Task] = set()  # the ones whose job has a time limit
        self._lock = threading.Lock()  # for the two below
        self._jobs: dict[Future[Any], Job] = {}
        self._task_of: dict[int, Task] = {}  # job id -> its task
        self.kept = KeptResults()  # results kept on the cluster for other jobs (_inputs)

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def get(self, key: str) -> Optional[Task]:
        return self._by_key.get(key)

    def holds(self, task: Task) -> bool:
        """Whether ``task`` is still held here (not settled, timed out, killed or lost)."""
        return self._by_key.get(task.key) is task

    def task_of(self, future: Future[Any]) -> Optional[Task]:
        """The task that runs the job of ``future`` now, if any."""
        with self._lock:
            job = self._jobs.get(future)
            return None if job is None else self._task_of.get(job.id)

    def send(
        self, job: Job, slots: WorkerSlots, key: str, submit: Callable[[], Any]
    ) -> Optional[Task]:
        """Put ``job`` on the cluster as the task ``key``, pinned to ``slots``' worker;
        ``submit()`` makes its Dask future. None if the job was killed meanwhile or Dask
        refused it (then it failed with Dask's error)."""
        with self._lock:
            if job.future.done():  # killed while it waited to go again
                self._jobs.pop(job.future, None)
                return None
            try:
                future = submit()
            except Exception as exc:
                self._jobs.pop(job.future, None)
                self._outcomes.fail(job, exc)
                return None
            task = Task(job, key, future, slots)
            self._jobs[job.future] = job
            self._task_of[job.id] = task
        self._by_key[key] = task
        slots.add(task, task.sent_at)
        if job.timeout is not None:
            self._timed.add(task)
        return task

    def ended(self, task: Task) -> None:
        """Dask says ``task`` ended in time: its slot is free now, its result on the way."""
        self._timed.discard(task)
        task.slots.remove(task, time.monotonic())
        self._fetching.add(task)

    def fetching(self, task: Task) -> bool:
        return task in self._fetching

    def fetching_on(self, slots: WorkerSlots) -> list[Task]:
        """The tasks that ended on ``slots``' worker, their results not fetched yet."""
        return [task for task in self._fetching if task.slots is slots]

    def drop(self, task: Task, now: float, release: bool = True) -> None:
        """The task is off the pool's books: free its slot (the next one there starts) and let
        Dask forget it (unless not ``release``: its result is kept for other jobs). A task
        that has not started then never does; a running one runs on."""
        self._by_key.pop(task.key, None)
        self._timed.discard(task)
        self._fetching.discard(task)
        with self._lock:
            if self._task_of.get(task.job.id) is task:
                del self._task_of[task.job.id]
        task.slots.remove(task, now)
        if not release:
            return
        try:
            task.future.release()
        except Exception:  # the client's loop is closed: the scheduler forgets it anyway
            _log.debug("releasing a Dask future failed", exc_info=True)

    def forget(self, job: Job) -> None:
        """The dispatcher no longer holds ``job`` (it is settled, or will be by someone else)."""
        with self._lock:
            self._jobs.pop(job.future, None)

    def fail(self, task: Task, error: BaseException, now: float, timed_out: bool = False) -> None:
        """Let go of ``task`` and fail its job with ``error``."""
        self.drop(task, now)
        self.forget(task.job)
        self._outcomes.fail(task.job, error, timed_out=timed_out)

    def deadlines(self) -> list[float]:
        return [task.deadline for task in self._timed if task.deadline is not None]

    def expire(self, now: float) -> None:
        """Fail the jobs whose time limit has passed (their tasks run on, unheard)."""
        for task in [t for t in self._timed if t.deadline is not None and t.deadline <= now]:
            assert task.job.timeout is not None
            self.fail(task, JobTimeoutError(task.job.timeout), now, timed_out=True)

    def fail_all(self, error: BaseException) -> None:
        """Fail the job of every task on the cluster and let Dask forget the tasks."""
        now = time.monotonic()
        for task in list(self._by_key.values()):
            self.fail(task, error, now)

    def fail_held(self, error: BaseException) -> None:
        """Fail every job held here, asking nothing of Dask: the dispatcher is dying."""
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
            self._task_of.clear()
        for job in jobs:
            self._outcomes.fail(job, error)

    def kill(self, future: Future[Any]) -> bool:
        """From any thread: fail the job of ``future`` if it has not started; False if it may
        be running.

        Asks its worker, which alone knows: a task it has not started there never will. The
        lock keeps the dispatcher from sending the job again meanwhile.
        """
        with self._lock:
            job = self._jobs.get(future)
            if job is None:
                return False
            task = self._task_of.get(job.id)
            if task is not None:
                if self._client.status != "running":  # it would wait to reconnect: the
                    return False  # dispatcher fails the pool's jobs if it lost its scheduler
                try:
                    answers = self._client.run(
                        withdraw_tasks, [task.key], workers=[task.slots.address]
                    )
                except Exception:  # the worker is gone: its jobs are settled as it leaves
                    return False
                if not answers.get(task.slots.address, {}).get(task.key, False):
                    return False
            killed = self._outcomes.fail(job, JobKilledError(KILLED_WAITING))
        if task is not None:
            self._inbox.put(lambda: self._killed(task))
        return killed

    def _killed(self, task: Task) -> None:
        """In the dispatcher thread: let go of the task of a killed job."""
        if self.holds(task):
            self.drop(task, time.monotonic())
            self.forget(task.job)
