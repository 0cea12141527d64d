"""JobLine: the jobs waiting for a worker process, in the order they get one.

First the jobs a worker handed back unstarted (recalled, or left behind by a worker that died,
timed out or was killed; see _send_ahead): they are already marked running, so they go first. Then
the pool's own queue, whose jobs are marked running as they leave it (a cancelled one is
skipped).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Callable, Optional

from .._job import Job, JobQueue, Outcomes


class JobLine:
    def __init__(self, queue: JobQueue, outcomes: Outcomes) -> None:
        self._queue = queue
        self._outcomes = outcomes
        self._returned: deque[Job] = deque()

    def waiting(self) -> bool:
        """Whether jobs wait for a worker (queued, or returned by one)."""
        return bool(self._returned) or self._queue.qsize() > 0

    def count(self) -> int:
        """How many jobs wait for a worker (queued, or returned by one)."""
        return len(self._returned) + self._queue.qsize()

    def next_job(self) -> Optional[Job]:
        if self._returned:
            return self._returned.popleft()
        while True:
            job = self._queue.get_nowait()
            if job is None:
                return None
            if self._outcomes.start(job):
                return job

    def next_job_if(self, fits: Callable[[Job], bool]) -> Optional[Job]:
        """The next job if ``fits(job)``; else None, and that job stays first in line."""
        returned = self._returned
        if returned:
            return returned.popleft() if fits(returned[0]) else None
        while True:
            job = self._queue.get_nowait()
            if job is None:
                return None
            if not fits(job):
                self._queue.put_back(job)
                return None
            if self._outcomes.start(job):
                return job

    def give_back(self, jobs: Iterable[Job]) -> None:
        """A worker will not run ``jobs``: they go after the other returned ones (not those
        Pool.kill() failed meanwhile: they must not run)."""
        self._returned.extend(job for job in jobs if not job.future.resolved)

    def put_first(self, jobs: list[Job]) -> None:
        """``jobs`` (in order) go before everything else."""
        self._returned.extendleft(reversed(jobs))

    def kill(self, future: object, error: BaseException) -> bool:
        """Fail the returned job of ``future`` (Pool.kill): it will not run."""
        for job in self._returned:
            if job.future is future:
                self._returned.remove(job)
                return self._outcomes.fail(job, error)
        return False

    def fail_returned(self, error: BaseException) -> None:
        """Fail every returned job (the pool was terminated or broke)."""
        while self._returned:
            self._outcomes.fail(self._returned.popleft(), error)

    def fail_all(self, error: BaseException) -> None:
        """Fail every waiting job, returned and queued (the pool broke)."""
        for job in self._queue.drain():
            self._outcomes.fail_pending(job, error)
        self.fail_returned(error)
