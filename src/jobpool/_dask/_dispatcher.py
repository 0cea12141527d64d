"""The Dask backend's dispatcher thread: the loop that sends jobs to the cluster and settles them.

One thread owns every task of the pool on the cluster. It sleeps on one :class:`Inbox`, woken by
the pool (a job was queued), by the Dask client's event loop (a task ended, a result arrived,
the cluster answered a question) and by the nearest time limit, recall or membership question.
Everything it asks of the cluster goes through the client's event loop without waiting for the
answer, so a slow answer never keeps the next job from being sent. Each turn of the loop:

- sends waiting jobs to workers with room (:class:`Sender`) and has :class:`Results` watch them;
- runs what arrived: tasks that ended, results fetched, the cluster's answers, kills, calls;
- fetches the results of the tasks that ended, in one request (:class:`Results`);
- fails the jobs past their time limit (:class:`ClusterTasks`), takes back tasks stuck behind a long
  job (:class:`Sender`), and asks which workers the cluster has when it is time
  (:class:`DaskWorkers`: slots of workers that left go to the others, new workers get the
  slots the pool still lacks; see :mod:`jobpool._dask._slots`).

Each part calls only the parts below it (Sender and Results sit side by side and never call
each other), so none imports one above it either:

    DaskDispatcher (here)          the loop, its wake-ups, closing and terminating
      |-- Sender (_sending)        which worker each job runs on; taking back stuck tasks
      |-- Results (_results)       watching tasks, fetching results in batches, settling jobs
      v
    DaskWorkers (_workers)         the workers' slots; joining, leaving, dying; the round trip
      v
    DaskLine (_line)               returned jobs first, then the pool's queue; closing, broken
      v
    ClusterTasks (_tasks)                 the tasks on the cluster and the jobs held; Pool.kill()
      v
    Inbox (_inbox)                 the queue the thread sleeps on; answers from the client's loop

The client, the inbox, the tasks and the line reach the three upper parts as one ``LowerParts``
(:mod:`jobpool._dask._parts`).

The thread must outlive whatever the cluster answers. A scheduler the client lost is found at
the top of every turn, and from the tasks Dask cancels for it: every job the pool holds fails
with :class:`SchedulerLostError`, and the pool breaks (:meth:`DaskWorkers.scheduler_lost`). If
the thread dies all the same (a bug), every job it held, in the pool's queue and on the cluster,
fails at once with the reason, and so do the calls waiting for the thread (:meth:`Inbox.stop`).

The jobs that were waiting on a worker that died or left had not started: they run elsewhere,
first in line, and only on a free slot (a job that killed its worker then fails at its next
crash, not in a loop). One exception comes from Dask itself: a worker tells the scheduler that a
job ended a few milliseconds after it did, so a worker that dies in those milliseconds may have
started the next job already. That job then runs a second time elsewhere, and the one before it
fails with :class:`WorkerCrashedError` although it ran (its result died with the worker).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Optional

from .._errors import InitializerError, JobKilledError
from .._job import JobQueue, Outcomes
from .._lifecycle import weak_callback
from ._inbox import Inbox
from ._line import DaskLine
from ._parts import LowerParts
from ._per_worker import PoolInstances
from ._results import Results
from ._sending import Sender
from ._tasks import ClusterTasks
from ._workers import DaskWorkers

_log = logging.getLogger("jobpool")


class DaskDispatcher:
    def __init__(
        self,
        client: Any,
        queue: JobQueue,
        outcomes: Outcomes,
        workers: int,
        token: str,
        *,
        with_initializer: bool,
        on_broken: Callable[[BaseException], None],
        on_exit: Callable[[], None],
        per_worker: PoolInstances,
    ) -> None:
        inbox = self._inbox = Inbox(client.loop.asyncio_loop)
        tasks = self.tasks = ClusterTasks(client, outcomes, inbox)
        line = self._line = DaskLine(queue, outcomes, tasks, weak_callback(on_broken))
        lower = LowerParts(client, inbox, tasks, line)
        self.workers = DaskWorkers(lower, outcomes, workers=workers, resource=f"jobpool-{token}")
        self._sender = Sender(
            lower,
            self.workers,
            token=token,
            with_initializer=with_initializer,
            per_worker=per_worker,
        )
        self._results = Results(lower, self.workers, outcomes)
        self._on_exit = on_exit
        self._room = True  # whether notify() should wake the dispatcher (read without a lock)
        self.workers.share_out(client.nthreads(), wait=True)
        self._thread = threading.Thread(target=self._run, name="jobpool-dask", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # --- called from other threads --------------------------------------------------------------

    def notify(self) -> None:
        if not self._inbox.wake_pending and self._room:
            self._inbox.wake()

    def slot_count(self) -> int:
        return self.workers.slot_count()

    def shutdown(self, wait: bool) -> None:
        self._line.closing = True
        self._inbox.wake()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def terminate(self) -> None:
        self._line.terminating = True
        self._line.closing = True
        self._inbox.wake()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``fn`` in the dispatcher thread and return its result (its state is its alone)."""
        if threading.current_thread() is self._thread:
            return fn()
        return self._inbox.call(fn).result(timeout)

    def kill(self, future: Future[Any]) -> bool:
        """Fail the job of ``future`` if it has not started; False if it may be running."""
        return self.tasks.kill(future)

    # --- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        reason: BaseException = RuntimeError("the Dask backend's dispatcher has stopped")
        try:
            self._dispatch()
            reason = self._line.broken or reason
        except BaseException as exc:  # a bug here must not leave futures hanging forever
            _log.exception("jobpool Dask dispatcher failed")
            reason = InitializerError(f"the Dask backend's dispatcher failed: {exc!r}")
            reason.__cause__ = exc
            self._inbox.stop(reason)
            self._fail_everything(reason)
        finally:
            self._inbox.stop(reason)
            try:
                self.workers.reset()
            finally:
                self._on_exit()

    def _fail_everything(self, error: BaseException) -> None:
        """The thread is dying: fail every job, each step on its own, the last asking nothing
        of Dask, so that one that raises cannot keep the others from failing."""
        for step in (self._line.break_pool, self._abandon_all, self.tasks.fail_held):
            try:
                step(error)
            except BaseException:
                _log.exception("failing the jobs of the Dask backend's dispatcher failed")

    def _dispatch(self) -> None:
        while True:
            self._inbox.wake_pending = False
            self.workers.scheduler_lost()  # fails every job and breaks the pool, once
            self._send_jobs()
            if not self.tasks and self._line.finished():
                return
            for action in self._inbox.take(self._sleep_time()):
                if action is not None:  # None: only a wake-up
                    action()
            self._results.fetch()
            now = time.monotonic()
            self.tasks.expire(now)
            self._sender.recall(now)
            self.workers.check_if_due(now)
            if self._line.terminating:
                self._abandon_all(JobKilledError("the pool was terminated"))

    def _send_jobs(self) -> None:
        sent = self._sender.send_jobs()
        # Wake for a new job when a worker could take it, or when the pool has no slot at all
        # (then the dispatcher asks the cluster for workers while jobs wait).
        self._room = self._sender.has_room() or not self.workers.slot_count()
        if sent:
            self._results.watch(sent)
        if sent or self._line.queued():
            self.workers.check_soon()

    def _sleep_time(self) -> Optional[float]:
        """Until the nearest time limit, recall or membership question; None: until woken."""
        wake_at = self.tasks.deadlines() + self._sender.recall_times()
        wake_at += self.workers.check_times()
        if not wake_at:
            return None
        return max(0.0, min(wake_at) - time.monotonic())

    def _abandon_all(self, error: BaseException) -> None:
        """Fail every job the dispatcher holds and let Dask forget their tasks."""
        self.tasks.fail_all(error)
        self._line.fail_returned(error)
