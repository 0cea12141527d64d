"""Results: what happens to a Dask task once it is sent, until its job is settled.

Each task is *watched* by a coroutine on the client's event loop, which tells the dispatcher
thread (through the inbox) the moment Dask says the task is done: its slot is free then, and the
next task waiting on that worker is running. Its result is fetched off the dispatcher thread, in
one request for all the tasks that ended since the last one came back (the client merges
fetches that overlap), so a burst of short jobs costs a request per batch, not per job.

A result settles its job (see :mod:`jobpool._dask._replies`), or gives it back to the line when
its worker had taken it back before it started. A task that Dask failed is a worker that died
(``KilledWorker``: the workers lose it, with the jobs running there), a scheduler the client lost
(every job fails, the pool breaks: :meth:`DaskWorkers.scheduler_lost`) or a task Dask could not
run; a result that could not be fetched, or that is not jobpool's reply, fails its job alone.

Calls go down only: to the workers, the line, the pool's tasks (:class:`ClusterTasks`) and the
inbox.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any, Callable, Optional

import distributed.client

from .._job import Outcomes
from .._protocol import OK, WITHDRAWN
from ._parts import LowerParts, UpperPart
from ._replies import (
    crash_error,
    is_reply,
    lost_result_error,
    not_a_reply_error,
    settle_task_outcome,
    task_error,
)
from ._slots import Task
from ._workers import CLOSE_TIMEOUT_SECONDS, DaskWorkers

# Waits (on the client's event loop) for a Dask future to be done, then calls back there.
_done_callback: Any = distributed.client.done_callback


class Results(UpperPart):
    def __init__(self, lower: LowerParts, workers: DaskWorkers, outcomes: Outcomes) -> None:
        super().__init__(lower)
        self._loop = lower.client.loop.asyncio_loop
        self._outcomes = outcomes
        self._workers = workers
        self._to_fetch: list[Task] = []  # the tasks that ended since the last request
        self._fetch_pending = False
        self._watchers: set[asyncio.Future[Any]] = set()  # touched on the client's loop only

    def watch(self, tasks: list[Task]) -> None:
        """Have the dispatcher told when each of ``tasks`` is done."""
        try:
            self._loop.call_soon_threadsafe(self._watch_all, tasks)
        except RuntimeError:  # the client's loop is closed: nothing will be done, look now
            for task in tasks:
                self._inbox.put(functools.partial(self._done, task))

    def _watch_all(self, tasks: list[Task]) -> None:
        """On the client's loop: report each task to the dispatcher when Dask says it is done."""
        for task in tasks:
            watcher = asyncio.ensure_future(_done_callback(task.future, self._reporter(task)))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)

    def _reporter(self, task: Task) -> Callable[[Any], None]:
        return lambda _: self._inbox.put(lambda: self._done(task))

    def _done(self, task: Task) -> None:
        """Dask says the task is done: its slot is free now, and its result is to be fetched."""
        if not self._tasks.holds(task) or self._tasks.fetching(task):
            return  # settled already (timed out, killed, worker gone), or being fetched
        if task.future.status != "finished":
            self._failed_in_dask(task)
            return
        self._tasks.ended(task)
        self._to_fetch.append(task)

    def fetch(self) -> None:
        """Ask for the results of the tasks that ended, in one request.

        One request at a time: the tasks that end meanwhile wait for it to come back and go in
        the next one, so a burst of short jobs costs a request per batch, not per job.
        """
        if self._to_fetch and not self._fetch_pending:
            tasks = [task for task in self._to_fetch if self._tasks.holds(task)]
            self._to_fetch = []
            if not tasks:  # all settled meanwhile (the scheduler was lost, say)
                return
            futures = [task.future for task in tasks]
            self._fetch_pending = True
            self._inbox.ask(
                lambda: self._client.gather(futures, asynchronous=True), self._fetched, tasks
            )

    def _fetched(self, tasks: list[Task], values: Any) -> None:
        self._fetch_pending = False
        self._settle_all(tasks, values)

    def _settle_all(self, tasks: list[Task], values: Any) -> None:
        if isinstance(values, BaseException):  # one of them could not be fetched: each alone
            if self._workers.scheduler_lost():
                return  # every job the pool held has failed
            if len(tasks) > 1:
                for task in tasks:
                    asking = functools.partial(
                        self._client.gather, [task.future], asynchronous=True
                    )
                    self._inbox.ask(asking, self._settle_all, [task])
                return
            values = [values]
        elif not isinstance(values, list) or len(values) != len(tasks):
            values = [values] * len(tasks)  # not an answer to this question: each job says so
        now = time.monotonic()
        for task, value in zip(tasks, values):
            if self._tasks.holds(task):
                self._settle(task, value, now)

    def _settle(self, task: Task, value: Any, now: float) -> None:
        job = task.job
        if isinstance(value, BaseException):  # its result was lost before it was fetched
            self._tasks.fail(task, lost_result_error(value), now)
            return
        if not is_reply(value):
            self._tasks.fail(task, not_a_reply_error(value), now)
            return
        tag, data, seconds = value
        # Jobs of this pool that take this one's future as an argument get its result on the
        # cluster: its Dask future is kept for them (before the job's own future resolves).
        kept = tag == OK and self._tasks.kept.keep(job.future, task.future, task.slots.address)
        self._tasks.drop(task, now, release=not kept)
        if tag == WITHDRAWN:
            self._line.give_back(job)
            return
        self._tasks.forget(job)
        task.slots.finished(seconds)
        if task.running_since == task.sent_at:  # sent to a free slot: beyond the job's own
            round_trip = max(0.0, now - task.sent_at - seconds)  # time, it is the round trip
            self._workers.round_trip_seen(round_trip)
        broken = settle_task_outcome(self._outcomes, job, tag, data)
        if broken is not None:
            self._line.break_pool(broken)

    def _failed_in_dask(self, task: Task) -> None:
        from distributed.scheduler import KilledWorker

        cancel_reason = _cancel_reason(task.future)
        if self._workers.scheduler_lost(cancel_reason == CONNECTION_LOST):
            return  # every job the pool held has failed, this one too
        try:
            dask_error = task.future.exception(timeout=CLOSE_TIMEOUT_SECONDS)
        except BaseException as exc:  # cancelled: no exception to ask for
            dask_error = exc
        if isinstance(dask_error, KilledWorker):
            self._workers.lost(task.slots, crash_error(dask_error))
            return
        # Its status is read before the task is dropped: dropping releases the future, after
        # which the client may mark it cancelled.
        error = task_error(task.future.status, dask_error, cancel_reason)
        self._tasks.fail(task, error, time.monotonic())


# Why distributed cancels every future of a client that lost its scheduler.
CONNECTION_LOST = "scheduler-connection-lost"


def _cancel_reason(future: Any) -> Optional[str]:
    """Why Dask cancelled ``future``, where distributed records it; None if it was not."""
    if getattr(future, "status", None) != "cancelled":
        return None
    cancelled = getattr(getattr(future, "_state", None), "exception", None)
    reason = getattr(cancelled, "reason", None)
    return reason if isinstance(reason, str) else None
