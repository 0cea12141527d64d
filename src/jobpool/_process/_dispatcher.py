"""The parent side of the process backend: one thread whose loop owns every worker.

It sleeps in an FdWatch (epoll) over each worker's pipe, each worker's exit fd, each starting
worker's stderr and a wake-up pipe, with a timeout equal to the nearest job deadline, never a
polling interval. Each wake-up is a few named steps: read what workers said (_messages), see
to the workers that exited (_workers: failing only the job each ran, requeueing the ones sent
ahead, starting a replacement), kill overdue workers, hand waiting jobs to idle workers and send
busy workers with short jobs their next ones (_routing).

    submit() --JobQueue--> Dispatcher --pipe--> worker --pipe--> Dispatcher --> Future

The parts call downwards only: the loop asks the others; ``_lending`` (a caller thread reading
its own reply) uses ``_messages``, ``_routing`` and ``_workers``; ``_messages`` uses
``_workers``, which uses the handles and the ``JobLine``. None of them writes a worker's
bookkeeping itself: ``Workers`` owns the set's (the idle count, closing, broken), each
``WorkerHandle`` its own worker's. The dispatcher's lock is held by its thread except while it
sleeps; whoever holds it may ask the workers to act.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future
from multiprocessing.context import BaseContext
from typing import Any, Callable, Optional

from .._errors import BROKEN, InitializerError, JobKilledError
from .._job import Job, JobQueue, Outcomes
from ._handle import WorkerHandle
from ._large_data import LargeData
from ._lending import ReplyLender
from ._line import JobLine
from ._messages import Messages
from ._routing import assign_jobs, send_ahead
from ._start import WorkerSetup
from ._watch import FdWatch, WakePipe
from ._workers import EXIT, MEMORY, OUTPUT, PIPE, TERMINATED, Event, Workers

_log = logging.getLogger("jobpool")

# How long the loop's record of how busy it is lasts (see _count_load).
LOAD_SECONDS = 0.05


class Dispatcher:
    def __init__(
        self,
        context: BaseContext,
        queue: JobQueue,
        outcomes: Outcomes,
        size: int,
        setup: WorkerSetup,
        max_jobs_per_worker: Optional[int],
        on_broken: Callable[[BaseException], None],
        large: Optional[LargeData] = None,
        max_worker_memory: Optional[int] = None,
    ) -> None:
        self._outcomes = outcomes
        self._watch: FdWatch[Event] = FdWatch()
        self._wake = WakePipe()
        self._watch.add(self._wake.read_fd, None)
        self.line = JobLine(queue, outcomes)
        self.workers = Workers(
            context,
            setup,
            size,
            max_jobs_per_worker,
            self.line,
            outcomes,
            on_broken,
            self._watch,
            large,
            max_worker_memory,
        )
        self._messages = Messages(self.workers, self.line, outcomes)
        self.lock = threading.Lock()
        self.lender = ReplyLender(
            self.lock, self._watch, self._wake, self.workers, self.line, self._messages
        )
        self._requests: list[tuple[Callable[[], Any], threading.Event, list[Any]]] = []
        self._requests_lock = threading.Lock()
        self._events_stale = False
        # How busy the loop is: seconds awake (starting workers aside) and asleep, each fading
        # over LOAD_SECONDS (see Workers.grow).
        self._awake, self._asleep = 0.0, 1e-9
        self._woke_at = time.monotonic()
        self.first_workers = threading.Event()  # set once the first workers were started
        self.thread = threading.Thread(target=self._run, name="jobpool-dispatcher", daemon=True)
        self.lender.dispatcher = self.thread

    # --- called from other threads -------------------------------------------------------------

    @property
    def wake_pending(self) -> bool:
        return self._wake.pending

    def wake(self) -> None:
        self._wake.wake()

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``fn`` in the dispatcher thread and return its result (workers are its alone)."""
        if threading.current_thread() is self.thread:
            return fn()
        done = threading.Event()
        box: list[Any] = []
        with self._requests_lock:
            if not self.thread.is_alive():
                return None
            self._requests.append((fn, done, box))
        self.wake()
        done.wait(timeout)
        return box[0] if box else None

    def offer(self, job: Job) -> bool:
        """Send ``job`` to an idle worker from the submitting thread; False: queue it instead.

        This skips the hop through the dispatcher thread (a thread wake-up and a GIL hand-off)
        when a worker is waiting and no job is queued ahead of this one. It only tries while the
        dispatcher sleeps, so it never waits for it.
        """
        workers = self.workers
        if workers.idle_count <= 0 or workers.closing or not self.lock.acquire(blocking=False):
            return False
        try:
            if workers.closing or workers.broken is not None or self.line.waiting():
                return False
            if not workers.start_on_idle(job):
                return False
            # Marked running only now, to let the worker start sooner: nobody else holds the
            # future yet to cancel it, and its reply waits for the lock we hold.
            self._outcomes.start(job)
        finally:
            self.lock.release()
        if job.timeout is not None or job.memory_limit is not None:
            self.wake()  # for the new deadline, or to sample the job's memory from now on
        return True

    def close(self) -> None:
        """Run what waits, then stop the workers."""
        self.workers.close()
        self.wake()

    def terminate(self) -> None:
        self.workers.terminate()
        self.wake()

    def kill_job(self, future: Future[Any]) -> bool:
        """Pool.kill(), run in the dispatcher thread (see ``call``)."""
        return self.workers.kill_job(future)

    # --- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        workers = self.workers
        try:
            self.lock.acquire()
            while (
                workers.handles
                or not workers.closing
                or workers.needs_first_workers()
                or workers.retrying()
            ):
                if workers.needs_first_workers():
                    workers.start_first()
                    self.first_workers.set()
                # Count before assigning: a submitter that reads 0 idle workers (and so does not
                # wake us) queued its job before this count, so assign_jobs below sees it.
                workers.count_idle()
                assign_jobs(workers, self.line)
                send_ahead(workers, self.line)
                workers.grow(self._awake / (self._awake + self._asleep))
                workers.stop_when_drained()
                if not workers.handles and workers.closing and not workers.retrying():
                    break
                self._sleep_and_handle_events()
        except BaseException as exc:  # a bug here must not leave futures hanging forever
            _log.exception("jobpool dispatcher failed")
            self._give_up(exc)
        finally:
            self.first_workers.set()  # nobody waits for workers that will not come
            workers.loop_ended()
            self.line.fail_returned(workers.broken or JobKilledError(TERMINATED))
            self.lock.release()
            self._run_requests()
            self._watch.close()
            self._wake.close()

    def _give_up(self, exc: BaseException) -> None:
        """The loop failed (a bug in jobpool): every future it would have resolved fails now
        with the reason, the pool says it is broken, and no worker is left behind.

        Each step is tried on its own, so one that fails too does not keep the others from
        running: first the pool refuses new jobs, then every job waiting or held by a worker
        fails, then the workers are killed and reaped.
        """
        error = InitializerError(
            f"the process pool's dispatcher thread failed: {type(exc).__name__}: {exc}; "
            f"{BROKEN}: create a new Pool"
        )
        error.__cause__ = exc
        workers = self.workers

        def fail_jobs() -> None:
            workers.fail_held(workers.broken or error)
            self.line.fail_all(workers.broken or error)

        steps: list[Callable[[], None]] = [
            lambda: workers.break_pool(error),
            fail_jobs,
            workers.kill_all,
        ]
        for step in steps:
            try:
                step()
            except BaseException:
                _log.exception("jobpool dispatcher: a step of giving up failed")
        for handle in list(workers.handles):
            try:
                handle.reap()
            except BaseException:
                _log.exception("jobpool dispatcher: worker %s could not be reaped", handle.pid)

    def _sleep_and_handle_events(self) -> None:
        workers = self.workers
        timeout = workers.seconds_to_next_deadline()
        # Growing: only look for events, then start the next worker (see Workers.grow).
        sleep = 0.0 if workers.start_now else timeout
        lends = self.lender.lends
        fell_asleep = time.monotonic()
        self.lock.release()  # while we sleep, a submitter may hand a job to an idle worker
        try:
            events = self._watch.wait(sleep)
        finally:
            self.lock.acquire()
        self._count_load(fell_asleep)
        # A thread that borrowed a pipe while we slept may have read what woke us.
        self._events_stale = lends != self.lender.lends
        for event in events:
            if event is None:
                self._wake.drain()
                continue
            kind, handle = event
            if kind == PIPE:
                self._read(handle)
            elif kind == EXIT:
                self._exited(handle)
            elif kind == OUTPUT:
                workers.on_output(handle)
            elif kind == MEMORY:
                workers.out_of_memory(handle)
        self._run_requests()
        if timeout is not None:  # some job had a deadline when we went to sleep
            workers.expire_deadlines()
        if workers.terminating:
            workers.kill_all()

    def _count_load(self, fell_asleep: float) -> None:
        """Add this turn's time awake (not starting workers) and asleep to the fading sums."""
        now = time.monotonic()
        awake = max(0.0, fell_asleep - self._woke_at - self.workers.took_starting())
        asleep = now - fell_asleep
        fade = math.exp(-(now - self._woke_at) / LOAD_SECONDS)
        self._awake = self._awake * fade + awake
        self._asleep = self._asleep * fade + asleep + 1e-9
        self._woke_at = now

    def _read(self, handle: WorkerHandle) -> None:
        if handle.exited or handle.lent:
            return  # seen to already / a waiting thread reads this pipe
        for reply in self._messages.read(handle, blocking_read=not self._events_stale):
            self._messages.settle(reply)
        if handle.reader.eof:  # the worker is gone; its exit fd tells the rest
            self._watch.remove(handle.fd, (PIPE, handle))

    def _exited(self, handle: WorkerHandle) -> None:
        if handle.exited:
            return
        for reply in self._messages.read(handle, blocking_read=False):  # its last words
            self._messages.settle(reply)
        self.workers.worker_exited(handle)

    def _run_requests(self) -> None:
        if not self._requests:  # call() appends before it wakes us: we look again then
            return
        with self._requests_lock:
            requests, self._requests = self._requests, []
        for fn, done, box in requests:
            try:
                box.append(fn())
            finally:
                done.set()

    def worker_count(self) -> int:
        return self.workers.serving()
