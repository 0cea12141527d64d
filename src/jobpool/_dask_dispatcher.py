"""The Dask backend's dispatcher thread: sends jobs to the cluster's workers and settles them.

One thread owns every task of the pool on the cluster. It sleeps on one queue of events, woken
by the pool (a job was queued), by the Dask client's event loop (a task's result arrived, the
cluster's workers changed, a worker answered), and by the nearest time limit. Everything it asks
of the cluster goes through the client's event loop without waiting for the answer, so a slow
answer never keeps the next job from being sent:

- each task is *watched* by a coroutine on that loop that fetches its result as soon as it is
  ready (the client merges fetches that overlap into one request) and queues it here;
- which workers the cluster has is asked every ``MEMBERSHIP_SECONDS`` while jobs are in flight
  or waiting, and at once after a worker died: slots of workers that left go to the others,
  and new workers get slots the pool still lacks (see :mod:`jobpool._dask_slots`);
- tasks waiting behind a job that turned out long are taken back (``withdraw_tasks`` on their
  worker) when a slot is free elsewhere, and run there instead.

The jobs that were waiting on a worker that died or left had not started: they run elsewhere,
first in line, and only on a free slot (a job that killed its worker then fails at its next
crash, not in a loop). One exception comes from Dask itself: a worker tells the scheduler that a
job ended a few milliseconds after it did, so a worker that dies in those milliseconds may have
started the next job already. That job then runs a second time elsewhere, and the one before it
fails with :class:`WorkerCrashedError` although it ran (its result died with the worker).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import re
import threading
import time
from collections import deque
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import Any, Callable, Optional

import distributed.client

from ._dask import (
    RUN_CALL,
    RUN_CHUNK,
    WITHDRAWN,
    run_on_worker,
    set_slots,
    withdraw_tasks,
)
from ._dask_replies import crash_error, left_error, lost_result_error, settle_reply, task_error
from ._dask_slots import (
    FIRST_ROUND_TRIP_SECONDS,
    ROUND_TRIP_WEIGHT,
    Task,
    WorkerSlots,
    may_wait,
    share_slots,
)
from ._errors import (
    InitializerError,
    JobKilledError,
    JobTimeoutError,
    WorkerCrashedError,
)
from ._job import Call, Job, JobQueue, Outcomes
from ._lifecycle import weak_callback
from ._per_worker_dask import PoolInstances

_log = logging.getLogger("jobpool")
# Waits (on the client's event loop) for a Dask future to be done, then calls back there.
_done_callback: Any = distributed.client.done_callback

# How often to ask which workers the cluster has, while jobs are in flight or waiting.
MEMBERSHIP_SECONDS = 1.0
# How long closing waits for a worker to answer (resources are reset on a best-effort basis).
CLOSE_TIMEOUT_SECONDS = 5.0
KILLED_WAITING = "job killed by Pool.kill() before it started on its Dask worker; it will not run"

# Events the dispatcher thread handles (besides None, "wake up").
DONE, FETCHED, FETCHED_ONE, KILLED = "done", "fetched", "fetched-one", "killed"
MEMBERS, SLOTS_SET, RECALLED, CALL = "members", "slots-set", "recalled", "call"


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
        self._client = client
        self._loop = client.loop.asyncio_loop
        self._queue = queue
        self._outcomes = outcomes
        self._workers = workers
        self._token = token
        self._run_token = token if with_initializer else None
        self._resource = f"jobpool-{token}"
        self._on_broken = weak_callback(on_broken)
        self._on_exit = on_exit
        self._per_worker = per_worker
        self._events: SimpleQueue[Any] = SimpleQueue()
        self._slots: dict[str, WorkerSlots] = {}
        self._tasks: dict[str, Task] = {}  # key -> task, for the tasks on the cluster now
        self._fetching: set[Task] = set()  # the ones that ended, their results on the way
        self._to_fetch: list[Task] = []  # the ones that ended since the last request
        self._fetch_pending = False
        self._timed: set[Task] = set()  # the ones whose job has a time limit
        # Jobs this dispatcher holds (on the cluster, or given back and waiting to go again),
        # by future: Pool.kill() looks here. Changed under _lock, with the sending of a job.
        self._lock = threading.Lock()
        self._jobs: dict[Future[Any], Job] = {}
        self._task_of: dict[int, Task] = {}
        # Jobs already marked running that came back unstarted: first in line, free slots only.
        self._returned: deque[Job] = deque()
        self._numbers = itertools.count()
        self._round_trip = FIRST_ROUND_TRIP_SECONDS
        self._room = True  # whether notify() should wake the dispatcher (read without a lock)
        self._wake_pending = False
        self._closing = False
        self._terminating = False
        self._broken: Optional[BaseException] = None
        self._asking_members = False
        self._members_due: Optional[float] = None
        self._watchers: set[asyncio.Future[Any]] = set()  # touched on the client's loop only
        self._share_out(client.nthreads(), wait=True)
        self._thread = threading.Thread(target=self._run, name="jobpool-dask", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # --- called from other threads --------------------------------------------------------------

    def notify(self) -> None:
        if not self._wake_pending and self._room:
            self._wake()

    def slot_count(self) -> int:
        return sum(slots.quota for slots in list(self._slots.values()))

    def shutdown(self, wait: bool) -> None:
        self._closing = True
        self._wake()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def terminate(self) -> None:
        self._terminating = True
        self._closing = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``fn`` in the dispatcher thread and return its result (its state is its alone)."""
        if threading.current_thread() is self._thread:
            return fn()
        answer: Future[Any] = Future()
        self._events.put((CALL, fn, answer))
        return answer.result(timeout)

    def kill(self, future: Future[Any]) -> bool:
        """Fail the job of ``future`` if it has not started; False if it may be running.

        Asks its worker, which alone knows: a task it has not started there never will. The
        lock keeps the dispatcher from sending the job again meanwhile.
        """
        with self._lock:
            job = self._jobs.get(future)
            if job is None:
                return False
            task = self._task_of.get(job.id)
            if task is not None:
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
            self._events.put((KILLED, task))  # take it off the cluster's books
        return killed

    # --- the thread -----------------------------------------------------------------------------

    def _wake(self) -> None:
        self._wake_pending = True
        self._events.put(None)

    def _run(self) -> None:
        try:
            self._dispatch()
        except BaseException as exc:  # a bug here must not leave futures hanging forever
            _log.exception("jobpool Dask dispatcher failed")
            error = InitializerError(f"the Dask backend's dispatcher failed: {exc!r}")
            self._break(error)
            self._abandon_all(error)
        finally:
            self._reset_slots()
            self._on_exit()

    def _dispatch(self) -> None:
        while True:
            self._wake_pending = False
            self._send_jobs()
            if self._closing and not self._tasks and not self._returned and self._drained():
                return
            for event in self._next_events():
                self._handle(event)
            self._fetch()
            now = time.monotonic()
            self._expire(now)
            self._recall(now)
            self._ask_members_if_due(now)
            if self._terminating:
                self._abandon_all(JobKilledError("the pool was terminated"))

    def _drained(self) -> bool:
        return self._terminating or self._broken is not None or not self._queue.qsize()

    def _next_events(self) -> list[Any]:
        timeout = self._sleep_time()
        try:
            events = [self._events.get(timeout=timeout)]
        except Empty:
            return []
        while True:
            try:
                events.append(self._events.get_nowait())
            except Empty:
                return events

    def _sleep_time(self) -> Optional[float]:
        wake_at = [task.deadline for task in self._timed if task.deadline is not None]
        if any(slots.free_slots() for slots in self._slots.values()):  # else no use recalling
            wake_at += [at for s in self._slots.values() if (at := s.recall_at()) is not None]
        if self._members_due is not None and not self._asking_members:
            wake_at.append(self._members_due)
        if not wake_at:
            return None
        return max(0.0, min(wake_at) - time.monotonic())

    # --- sending jobs ---------------------------------------------------------------------------

    def _send_jobs(self) -> None:
        sent: list[Task] = []
        while not self._terminating:
            target = self._target()
            if target is None:
                break
            job = self._next_job(free_slot=target.free_slots() > 0)
            if job is None:
                break
            task = self._send(job, target)
            if task is not None:
                sent.append(task)
        # Wake for a new job when a worker could take it, or when the pool has no slot at all
        # (then the dispatcher asks the cluster for workers while jobs wait).
        self._room = self._target() is not None or not self.slot_count()
        if sent:
            self._loop.call_soon_threadsafe(self._watch_all, sent)
        if (sent or self._queue.qsize()) and self._members_due is None:
            self._members_due = time.monotonic() + MEMBERSHIP_SECONDS

    def _target(self) -> Optional[WorkerSlots]:
        """The worker to send the next job to: most free slots, else fewest tasks per slot."""
        best: Optional[WorkerSlots] = None
        best_rank = (0, -math.inf)
        for slots in self._slots.values():
            if slots.room(self._round_trip) <= 0:
                continue
            rank = (slots.free_slots(), -len(slots.tasks) / slots.quota)
            if best is None or rank > best_rank:
                best, best_rank = slots, rank
        return best

    def _next_job(self, free_slot: bool) -> Optional[Job]:
        """The next job to send; None if there is none, or if the first one is too big to be
        sent without a free slot (it stays first). Jobs given back go only to free slots."""
        while self._returned and free_slot:
            returned = self._returned.popleft()
            if not returned.future.done():
                return returned
            self._forget(returned)
        while True:
            job = self._queue.get_nowait()
            if job is None:
                return None
            if self._broken is not None:
                self._outcomes.fail_pending(job, self._broken)
                continue
            if not free_slot and not may_wait(job):
                self._queue.put_back(job)
                return None
            if self._outcomes.start(job):
                return job

    def _send(self, job: Job, target: WorkerSlots) -> Optional[Task]:
        assert job.fn_bytes is not None and job.body is not None
        kind = RUN_CALL if isinstance(job.work, Call) else RUN_CHUNK
        # A readable key for Dask's dashboard and logs: "jobpool-square-<pool>-<job id>-<n>".
        name = re.sub(r"\W+", "_", str(getattr(job.work.fn, "__name__", "job"))).strip("_")
        key = f"jobpool-{name or 'job'}-{self._token[:12]}-{job.id}-{next(self._numbers)}"
        restrictions: dict[str, Any] = {"workers": [target.address], "allow_other_workers": False}
        if target.resource is not None:
            restrictions["resources"] = {self._resource: 1}
        with self._lock:
            if job.future.done():  # killed while it waited to go again
                self._forget(job)
                return None
            try:
                future = self._client.submit(
                    run_on_worker,
                    self._run_token,
                    kind,
                    job.fn_bytes,
                    job.body,
                    key,
                    self._per_worker.key(),  # installs its plugin once handles travel
                    key=key,
                    pure=False,
                    **restrictions,
                )
            except Exception as exc:
                self._jobs.pop(job.future, None)
                self._outcomes.fail(job, exc)
                return None
            task = Task(job, key, future, target)
            self._jobs[job.future] = job
            self._task_of[job.id] = task
        self._tasks[key] = task
        target.add(task, task.sent_at)
        if job.timeout is not None:
            self._timed.add(task)
        return task

    def _watch_all(self, tasks: list[Task]) -> None:
        """On the client's loop: report each task here when Dask says it is done."""
        for task in tasks:
            watcher = asyncio.ensure_future(_done_callback(task.future, self._reporter(task)))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)

    def _reporter(self, task: Task) -> Callable[[Any], None]:
        return lambda _: self._events.put((DONE, task))

    # --- settling -------------------------------------------------------------------------------

    def _handle(self, event: Any) -> None:
        if event is None:
            return
        kind = event[0]
        if kind == DONE:
            self._done(event[1])
        elif kind == FETCHED:
            self._fetched(event[1], event[2])
        elif kind == FETCHED_ONE:
            self._fetched(event[1], event[2], batch=False)
        elif kind == KILLED:
            task: Task = event[1]
            if self._tasks.get(task.key) is task:
                self._drop(task, time.monotonic())
                self._forget(task.job)
        elif kind == MEMBERS:
            self._asking_members = False
            if not isinstance(event[1], BaseException):
                self._share_out(event[1], wait=False)
        elif kind == SLOTS_SET:
            self._slots_set(event[1], event[2])
        elif kind == RECALLED:
            self._recalled(event[1], event[2])
        elif kind == CALL:
            try:
                event[2].set_result(event[1]())
            except BaseException as exc:
                event[2].set_exception(exc)

    def _done(self, task: Task) -> None:
        """Dask says the task is done: its slot is free now, and its result is to be fetched."""
        if self._tasks.get(task.key) is not task or task in self._fetching:
            return  # settled already (timed out, killed, worker gone), or being fetched
        if task.future.status != "finished":
            self._failed_in_dask(task)
            return
        self._timed.discard(task)  # it ended in time
        task.slots.remove(task, time.monotonic())
        self._fetching.add(task)
        self._to_fetch.append(task)

    def _fetch(self) -> None:
        """Ask for the results of the tasks that ended, in one request.

        One request at a time: the tasks that end meanwhile wait for it to come back and go in
        the next one, so a burst of short jobs costs a request per batch, not per job.
        """
        if self._to_fetch and not self._fetch_pending:
            tasks, self._to_fetch = self._to_fetch, []
            asking = self._client.gather([task.future for task in tasks], asynchronous=True)
            self._fetch_pending = True
            self._ask(asking, FETCHED, tasks)

    def _fetched(self, tasks: list[Task], values: Any, batch: bool = True) -> None:
        if batch:
            self._fetch_pending = False
        if isinstance(values, BaseException):  # one of them could not be fetched: each alone
            if len(tasks) > 1:
                for task in tasks:
                    asking = self._client.gather([task.future], asynchronous=True)
                    self._ask(asking, FETCHED_ONE, [task])
                return
            values = [values]
        now = time.monotonic()
        for task, value in zip(tasks, values):
            if self._tasks.get(task.key) is task:
                self._settle(task, value, now)

    def _settle(self, task: Task, value: Any, now: float) -> None:
        job = task.job
        self._drop(task, now)
        if isinstance(value, BaseException):  # its result was lost before it was fetched
            self._forget(job)
            self._outcomes.fail(job, lost_result_error(value))
            return
        tag, data, seconds = value
        if tag == WITHDRAWN:
            self._give_back(job)
            return
        self._forget(job)
        task.slots.finished(seconds)
        if task.running_since == task.sent_at:  # sent to a free slot: beyond the job's own
            round_trip = max(0.0, now - task.sent_at - seconds)  # time, it is the round trip
            self._round_trip += (round_trip - self._round_trip) * ROUND_TRIP_WEIGHT
        broken = settle_reply(self._outcomes, job, tag, data)
        if broken is not None:
            self._break(broken)

    def _failed_in_dask(self, task: Task) -> None:
        from distributed.scheduler import KilledWorker

        try:
            dask_error = task.future.exception(timeout=CLOSE_TIMEOUT_SECONDS)
        except BaseException as exc:  # cancelled: no exception to ask for
            dask_error = exc
        if isinstance(dask_error, KilledWorker):
            self._worker_lost(task.slots, crash_error(dask_error))
            return
        self._drop(task, time.monotonic())
        self._forget(task.job)
        self._outcomes.fail(task.job, task_error(task.future.status, dask_error))

    def _worker_lost(self, slots: WorkerSlots, error: WorkerCrashedError) -> None:
        """A worker died or left: its running jobs fail, the ones waiting there run elsewhere."""
        if self._slots.get(slots.address) is slots:
            del self._slots[slots.address]
            self._outcomes.count("worker_restarts")  # its nanny, if any, starts a new one
        running = list(slots.running())
        for task in list(slots.tasks):
            self._drop(task, time.monotonic())
            if task in running:
                self._forget(task.job)
                self._outcomes.fail(task.job, error)
            else:
                self._give_back(task.job)
        for task in [t for t in self._fetching if t.slots is slots]:
            task.future.release()  # its result died with the worker: the fetch fails now
        self._members_due = time.monotonic()  # its replacement, if any, gets its slots

    def _drop(self, task: Task, now: float) -> None:
        """The task is off the pool's books: free its slot (the next one there starts) and let
        Dask forget it. A task that has not started then never does; a running one runs on."""
        self._tasks.pop(task.key, None)
        self._timed.discard(task)
        self._fetching.discard(task)
        with self._lock:
            if self._task_of.get(task.job.id) is task:
                del self._task_of[task.job.id]
        task.slots.remove(task, now)
        task.future.release()

    def _forget(self, job: Job) -> None:
        with self._lock:
            self._jobs.pop(job.future, None)

    def _give_back(self, job: Job) -> None:
        """A job that did not start where it was sent: first in line again, unless killed."""
        if job.future.done():
            self._forget(job)
        else:
            self._returned.append(job)

    def _expire(self, now: float) -> None:
        for task in [t for t in self._timed if t.deadline is not None and t.deadline <= now]:
            job = task.job
            assert job.timeout is not None
            self._drop(task, now)
            self._forget(job)
            self._outcomes.fail(job, JobTimeoutError(job.timeout), timed_out=True)

    def _abandon_all(self, error: BaseException) -> None:
        """Fail every job the dispatcher holds and cancel its task."""
        now = time.monotonic()
        for task in list(self._tasks.values()):
            self._drop(task, now)
            self._forget(task.job)
            self._outcomes.fail(task.job, error)
        self._fail_returned(error)

    def _break(self, error: BaseException) -> None:
        if self._broken is not None:
            return
        self._broken = error
        self._closing = True
        self._on_broken(error)
        for job in self._queue.drain():
            self._outcomes.fail_pending(job, error)
        self._fail_returned(error)

    def _fail_returned(self, error: BaseException) -> None:
        while self._returned:
            job = self._returned.popleft()
            self._forget(job)
            self._outcomes.fail(job, error)

    # --- waiting tasks that turned out stuck behind a long job ----------------------------------

    def _recall(self, now: float) -> None:
        if not any(slots.free_slots() for slots in self._slots.values()):
            return  # nowhere better to run them
        for slots in self._slots.values():
            recall_at = slots.recall_at()
            if recall_at is not None and recall_at <= now:
                slots.recalling = True
                keys = [task.key for task in slots.waiting()]
                asking = self._client.run(
                    withdraw_tasks, keys, workers=[slots.address], asynchronous=True
                )
                self._ask(asking, RECALLED, slots)

    def _recalled(self, slots: WorkerSlots, answers: Any) -> None:
        slots.recalling = False
        slots.recalled_at = time.monotonic()
        if isinstance(answers, BaseException):
            return
        now = time.monotonic()
        for key, taken_back in answers.get(slots.address, {}).items():
            task = self._tasks.get(key)
            if taken_back and task is not None:
                self._drop(task, now)
                self._give_back(task.job)

    # --- the cluster's workers ------------------------------------------------------------------

    def _ask_members_if_due(self, now: float) -> None:
        if self._members_due is None or now < self._members_due or self._asking_members:
            return
        self._members_due = None
        busy = self._tasks or self._returned or self._queue.qsize()
        if not busy:
            return
        self._asking_members = True
        self._members_due = now + MEMBERSHIP_SECONDS
        self._ask(self._client.nthreads(asynchronous=True), MEMBERS)

    def _share_out(self, nthreads: dict[str, int], wait: bool) -> None:
        """Match the pool's slots to the workers in ``nthreads`` (address -> threads)."""
        for address in [a for a in self._slots if a not in nthreads]:
            self._worker_lost(self._slots[address], left_error(address))
        for address, n in nthreads.items():
            if address not in self._slots:
                self._slots[address] = WorkerSlots(address, n)
        share_slots(self._slots, nthreads, self._workers)
        amounts = {}
        for slots in self._slots.values():
            if slots.needs_resource and slots.resource != slots.wanted:
                amounts[slots.address] = slots.wanted
            elif not slots.needs_resource:
                slots.quota = slots.wanted
        if not amounts:
            return
        if wait:
            self._slots_set(amounts, self._client.run(set_slots, self._resource, amounts))
        else:
            asking = self._client.run(set_slots, self._resource, amounts, asynchronous=True)
            self._ask(asking, SLOTS_SET, amounts)

    def _slots_set(self, amounts: dict[str, int], answers: Any) -> None:
        if isinstance(answers, BaseException):
            _log.warning("setting the pool's Dask resource failed: %r", answers)
            return
        now = time.monotonic()
        for address, amount in answers.items():
            slots = self._slots.get(address)
            if slots is None or amount < 0:
                continue
            slots.resource = amount
            slots.quota = min(slots.wanted, amount)
            slots.promote(now)

    def _reset_slots(self) -> None:
        """Set the pool's resource to 0 where it was set (a best effort: the pool is closing)."""
        amounts = {s.address: 0 for s in self._slots.values() if s.resource}
        if not amounts or self._client.status != "running":
            return
        try:
            self._client.run(
                set_slots, self._resource, amounts, callback_timeout=CLOSE_TIMEOUT_SECONDS
            )
        except Exception:
            _log.debug("resetting the pool's Dask resource failed", exc_info=True)

    def _ask(self, coroutine: Any, kind: str, *details: Any) -> None:
        """Run a client coroutine on its loop; its outcome (or exception) comes back as the
        event ``(kind, *details, outcome)``."""

        def report(done: Future[Any]) -> None:
            try:
                outcome = done.result()
            except BaseException as exc:
                outcome = exc
            self._events.put((kind, *details, outcome))

        asyncio.run_coroutine_threadsafe(coroutine, self._loop).add_done_callback(report)
