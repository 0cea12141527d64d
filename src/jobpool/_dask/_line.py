"""DaskLine: the jobs waiting to be sent to the cluster, in their order, and whether more will go.

First the jobs that came back unstarted (taken back from behind a long job, or left on a worker
that died or left): they are already marked running, so they go first, and only to a free slot
(a job that killed its worker then fails at its next crash, not in a loop). Then the pool's own
queue, whose jobs are marked running as they leave it; a job too big to wait on a worker leaves
it only for a free slot (see :func:`jobpool._dask._slots.may_wait`).

The line also knows when no more jobs will go: the pool is closing (the queue drains first),
terminating, or broken (every waiting job fails with the pool's error).
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Optional

from .._job import Job, JobQueue, Outcomes
from ._slots import may_wait
from ._tasks import ClusterTasks


class DaskLine:
    def __init__(
        self,
        queue: JobQueue,
        outcomes: Outcomes,
        tasks: ClusterTasks,
        on_broken: Callable[[BaseException], None],
    ) -> None:
        self._queue = queue
        self._outcomes = outcomes
        self._tasks = tasks
        self._on_broken = on_broken
        self._returned: deque[Job] = deque()
        self.closing = False  # set from other threads: read on the dispatcher's next turn
        self.terminating = False
        self.broken: Optional[BaseException] = None

    def waiting(self) -> bool:
        """Whether jobs wait to be sent (returned, or in the pool's queue)."""
        return bool(self._returned) or self.queued()

    def queued(self) -> bool:
        """Whether jobs wait in the pool's queue."""
        return self._queue.qsize() > 0

    def finished(self) -> bool:
        """Whether no job waits that will still be sent, and the pool is closing."""
        if not self.closing or self._returned:
            return False
        return self.terminating or self.broken is not None or not self._queue.qsize()

    def next_job(self, free_slot: bool) -> Optional[Job]:
        """The next job to send; None if there is none, or if the first one is too big to be
        sent without a free slot (it stays first). Jobs given back go only to free slots."""
        if self.terminating:
            return None
        while self._returned and free_slot:
            returned = self._returned.popleft()
            if not returned.future.done():
                return returned
            self._tasks.forget(returned)
        while True:
            job = self._queue.get_nowait()
            if job is None:
                return None
            if self.broken is not None:
                self._outcomes.fail_pending(job, self.broken)
                continue
            if not free_slot and not may_wait(job):
                self._queue.put_back(job)
                return None
            if self._outcomes.start(job):
                return job

    def give_back(self, job: Job) -> None:
        """A job that did not start where it was sent: first in line again, unless killed."""
        if job.future.done():
            self._tasks.forget(job)
        else:
            self._returned.append(job)

    def break_pool(self, error: BaseException) -> None:
        """The pool cannot run jobs: every job waiting here fails with ``error``, and no more
        will be sent."""
        if self.broken is not None:
            return
        self.broken = error
        self.closing = True
        self._on_broken(error)
        for job in self._queue.drain():
            self._outcomes.fail_pending(job, error)
        self.fail_returned(error)

    def fail_returned(self, error: BaseException) -> None:
        while self._returned:
            job = self._returned.popleft()
            self._tasks.forget(job)
            self._outcomes.fail(job, error)
