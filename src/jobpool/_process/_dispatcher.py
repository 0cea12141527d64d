"""The parent side of the process backend: one thread that owns every worker.

It sleeps in an FdWatch (epoll) over each worker's pipe, each worker's exit fd and a wake-up pipe,
with a timeout equal to the nearest job deadline, never a polling interval. Each wake-up is a few
named steps: read what workers said, bury the workers that exited (failing only the job each
ran, requeueing the ones sent ahead, and starting a replacement), kill overdue workers, hand
waiting jobs to idle workers, and send busy workers with short jobs their next ones (_ahead).

    submit() --JobQueue--> Dispatcher --pipe--> worker --pipe--> Dispatcher --> Future
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import threading
import time
from collections import deque
from concurrent.futures import Future
from multiprocessing.context import BaseContext
from typing import Any, Callable, Optional

from .._errors import InitializerError, JobKilledError, JobTimeoutError, WorkerCrashedError
from .._job import Job, JobFuture, JobQueue, Outcomes
from .._remote import unpack_exception
from . import _protocol as p
from ._handle import WorkerHandle
from ._large_data import LargeData, receive
from ._watch import FdWatch

_log = logging.getLogger("jobpool")

# A worker that dies before it is ready this many times in a row breaks the pool.
MAX_START_FAILURES = 3
_KILLED_MESSAGE = "job killed by Pool.kill() before it started; it will not run"


class Dispatcher:
    def __init__(
        self,
        context: BaseContext,
        queue: JobQueue,
        outcomes: Outcomes,
        workers: int,
        setup: tuple[Any, tuple[Any, ...]],
        max_jobs_per_worker: Optional[int],
        on_broken: Callable[[BaseException], None],
        large: Optional[LargeData] = None,
    ) -> None:
        self._context = context
        self._large = large
        self._queue = queue
        self._outcomes = outcomes
        self._size = workers
        self._setup = setup
        self._max_jobs = max_jobs_per_worker
        self._on_broken = on_broken
        self._log_level = logging.getLogger().getEffectiveLevel()
        self._handles: list[WorkerHandle] = []
        self._next_index = 0
        self._start_failures = 0
        self._watch = FdWatch()
        self._wake_r, self._wake_w = os.pipe()
        # Guards the wake pipe against its closing: once the dispatcher has closed it, its fd
        # numbers may belong to another file, so a late wake() must not write there.
        self._wake_lock = threading.Lock()
        self._wake_closed = False
        os.set_blocking(self._wake_r, False)
        self._watch.add(self._wake_r, None)
        self.wake_pending = False
        self.idle_workers = 0
        self.closing = False  # finish the queue, then stop the workers
        self._terminating = False  # stop now: kill the workers
        self._broken: Optional[BaseException] = None
        # Held by the dispatcher except while it sleeps: whoever holds it may touch the handles.
        self.lock = threading.Lock()
        self._requests: list[tuple[Callable[[], Any], threading.Event, list[Any]]] = []
        self._requests_lock = threading.Lock()
        # Counts threads that started reading a reply themselves (read_reply); when it moved
        # while we slept, a readable event we got may have been read already.
        self._helps = 0
        self._events_stale = False
        # Jobs already marked running that a worker gave back or left unstarted: first in line.
        self._returned: deque[Job] = deque()
        self.thread = threading.Thread(target=self._run, name="jobpool-dispatcher", daemon=True)

    # --- called from other threads -------------------------------------------------------------

    def wake(self) -> None:
        if not self.wake_pending:
            self.wake_pending = True
            with self._wake_lock:
                if self._wake_closed:  # the dispatcher has exited: nobody to wake
                    return
                try:
                    os.write(self._wake_w, b"x")
                except OSError:
                    pass

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``fn`` in the dispatcher thread and return its result (handles are its alone)."""
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
        if self.idle_workers <= 0 or self.closing or not self.lock.acquire(blocking=False):
            return False
        try:
            if self.closing or self._broken is not None or self._waiting():
                return False
            handle = next((h for h in self._handles if h.idle), None)
            if handle is None:
                return False
            self.idle_workers -= 1
            try:
                handle.run(job)
            except OSError:  # the worker died under us: its exit fails the job
                pass
            # Marked running only now, to let the worker start sooner: nobody else holds the
            # future yet to cancel it, and its reply waits for the lock we hold.
            self._outcomes.start(job)
        finally:
            self.lock.release()
        if job.timeout is not None:  # the dispatcher must wake up for the new deadline
            self.wake()
        return True

    def terminate(self) -> None:
        self._terminating = True
        self.closing = True
        self.wake()

    # --- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            lock = self.lock
            lock.acquire()
            for _ in range(self._size):
                self._start_worker()
            while self._handles or not self.closing:
                # Count before assigning: a submitter that reads 0 idle workers (and so does not
                # wake us) queued its job before this count, so _assign_jobs below sees it.
                self.idle_workers = sum(handle.idle for handle in self._handles)
                self._assign_jobs()
                self._send_ahead()
                self._stop_when_drained()
                if not self._handles and self.closing:
                    break
                timeout = self._seconds_to_next_deadline()
                helps = self._helps
                lock.release()  # while we sleep, a submitter may hand a job to an idle worker
                try:
                    ready = self._watch.wait(timeout)
                finally:
                    lock.acquire()
                self._events_stale = helps != self._helps
                for callback in ready:
                    if callback is None:
                        self._drain_wakeups()
                    else:
                        callback()
                self._run_requests()
                if timeout is not None:  # some job had a deadline when we went to sleep
                    self._expire_deadlines()
                if self._terminating:
                    self._kill_all()
        except BaseException as exc:  # a bug here must not leave futures hanging forever
            _log.exception("jobpool dispatcher failed")
            self._break(InitializerError(f"the process pool's dispatcher failed: {exc!r}"))
            self._kill_all()
            for handle in list(self._handles):
                handle.reap()
        finally:
            self.idle_workers = 0
            self._fail_returned(self._broken or JobKilledError("the pool was terminated"))
            self.lock.release()
            self._run_requests()
            self._watch.close()
            with self._wake_lock:
                self._wake_closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        # Cleared after reading: a wake-up that raced with us either left a byte in the pipe
        # or queued its job before the next _assign_jobs.
        self.wake_pending = False

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

    # --- workers --------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        handle = WorkerHandle(
            self._context, self._next_index, self._setup, self._log_level, self._large
        )
        self._next_index += 1
        self._handles.append(handle)
        self._watch.add(handle.fd, functools.partial(self._on_message, handle))
        self._watch.add(handle.exit_fd, functools.partial(self._on_exit, handle))

    def _on_message(self, handle: WorkerHandle) -> None:
        if handle.reaped or handle.helped:  # exit handled already / a waiting thread reads
            return
        # A thread that helped while we slept may have read what woke us: read without blocking.
        messages = handle.reader.read_ready() if self._events_stale else handle.reader.read()
        for data in messages:
            reply = self._handle_message(handle, pickle.loads(data))
            if reply is not None:
                self._settle(reply)
        if handle.reader.eof:  # the worker is gone; its exit fd tells the rest
            self._watch.remove(handle.fd)

    def read_reply(self, future: JobFuture, timeout: Optional[float]) -> None:
        """Wait for the reply of ``future``'s running job in the calling thread, and settle it.

        The dispatcher thread would read the reply, then wake the waiting thread: two wake-ups
        where the worker's write can wake the waiter directly. While a thread waits here, the
        dispatcher stops watching that one pipe (still watching the worker's exit and the job's
        deadline). If the worker dies or is killed, the dispatcher handles its exit as always
        and calls the helper off; the caller then waits on the future as usual. Returns quietly
        whenever it cannot help: the job is queued, the pool is busy (the dispatcher is awake
        anyway), or workers are recycled (which starts processes: the dispatcher's job).
        """
        if (
            self._max_jobs is not None
            or self._waiting()
            or threading.current_thread() is self.thread
        ):
            return
        with self.lock:
            handle = future._worker
            if (
                handle is None
                or handle.helped
                or handle.failure is not None
                or handle.job is None
                or handle.job.future is not future
                or handle.ahead
                or handle.recalling
                or not self._watch.pause(handle.fd)
            ):
                return
            handle.start_helping()
            self._helps += 1
        reply = None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                readable = handle.wait_for_reply(left)
                with self.lock:
                    if readable and not handle.reaped:
                        for data in handle.reader.read():
                            reply = self._handle_message(handle, pickle.loads(data)) or reply
                    if (
                        handle.job is None
                        or handle.reaped
                        or handle.reader.eof
                        or (left is not None and left <= 0)
                    ):
                        self._stop_helping(handle)
                        break
        finally:
            if handle.helped:  # interrupted (KeyboardInterrupt in poll): give the pipe back
                with self.lock:
                    self._stop_helping(handle)
            if reply is not None:  # outside the lock: done-callbacks may use the pool
                self._settle(reply)

    def _stop_helping(self, handle: WorkerHandle) -> None:
        """Give ``handle``'s pipe back to the dispatcher (under the lock)."""
        handle.helped = False
        if handle.reaped:
            handle.close_fds()  # left open for us by reap()
            return
        if handle.reader.eof:
            self._watch.remove(handle.fd)  # its exit fd tells the rest
        else:
            self._watch.resume(handle.fd)
        if handle.idle:
            self.idle_workers += 1
            if self.closing or self._waiting():
                self._assign_jobs()
                self.wake()  # anything else a free worker changes (closing) is the loop's

    def _handle_message(
        self, handle: WorkerHandle, message: tuple[Any, ...]
    ) -> Optional[tuple[Job, Any]]:
        """Act on one message; a job's reply is returned, for the caller to settle."""
        tag = message[0]
        reply = None
        if tag == p.OK and type(message[2]) is tuple:  # its buffers wait in shared memory
            message = (tag, message[1], receive(handle.segments, message[1], message[2]))
        if (tag == p.OK or tag == p.RAISED) and handle.failure is not None:
            # We killed this worker (timeout, Pool.kill): its job fails with that reason when
            # the exit is seen, even if a reply slipped out meanwhile; and it is replaced there,
            # not also recycled here.
            handle.moved_on = True
            return None
        if tag == p.OK or tag == p.RAISED:
            job = handle.finish_job()
            if job is not None and job.id == message[1]:
                reply = (job, message)
            following = handle.job
            if following is not None and following.killed:  # Pool.kill() came too late
                handle.kill(JobKilledError(_KILLED_MESSAGE))
                return reply
            if (
                self._max_jobs is not None
                and handle.jobs_done >= self._max_jobs
                and not handle.retiring
            ):
                handle.stop()
                if self._needs_workers():  # counted only when replaced, as for a crash
                    self._outcomes.count("worker_restarts")
                    self._start_worker()
        elif tag == p.GIVE_BACK:
            self._returned.extend(job for job in handle.gave_back(message[1]) if not job.killed)
        elif tag == p.LOG:
            self._forward_log(handle, message[1])
        elif tag == p.READY:
            handle.ready = True
            self._start_failures = 0
        elif tag == p.INIT_FAILED:
            cause = unpack_exception(message[1])
            error = InitializerError(
                f"the pool's initializer raised {type(cause).__name__}: {cause} in worker "
                f"{handle.pid}; the pool is broken and accepts no more jobs"
            )
            error.__cause__ = cause
            self._break(error)
        return reply

    def _settle(self, reply: tuple[Job, tuple[Any, ...]]) -> None:
        job, (tag, _, data) = reply
        if tag == p.RAISED:
            self._outcomes.fail(job, unpack_exception(data))
            return
        try:
            value = pickle.loads(data) if type(data) is bytes else data.load(writable=True)
        except BaseException as exc:
            self._outcomes.fail(job, exc)
        else:
            self._outcomes.succeed(job, value)

    def _forward_log(self, handle: WorkerHandle, state: dict[str, Any]) -> None:
        record = logging.makeLogRecord(state)
        record.jobpool_worker = handle.index
        record.processName = f"jobpool-worker-{handle.index}"
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)

    def _on_exit(self, handle: WorkerHandle) -> None:
        """A worker process ended: fail only the job it held, then replace it if needed."""
        if handle.reaped:
            return
        for data in handle.reader.read_ready():  # what it said before it went
            reply = self._handle_message(handle, pickle.loads(data))
            if reply is not None:
                self._settle(reply)
        self._watch.remove(handle.fd)
        self._watch.remove(handle.exit_fd)
        self._handles.remove(handle)
        exitcode = handle.reap()
        job = handle.job
        if job is not None:
            job.future._worker = None
            error = handle.failure or WorkerCrashedError(handle.pid, exitcode)
            self._outcomes.fail(job, error, timed_out=isinstance(error, JobTimeoutError))
        self._requeue_unstarted(handle, exitcode)
        if handle.retiring and handle.failure is None:
            return  # a planned exit: recycled or closing
        if not handle.ready and handle.failure is None:
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                self._break(
                    InitializerError(
                        f"worker processes keep dying while starting (last exit code "
                        f"{exitcode}); check that the initializer and the modules it needs "
                        "import in a fresh process. The pool is broken."
                    )
                )
                return
        if self._needs_workers():
            self._outcomes.count("worker_restarts")
            self._start_worker()

    def _requeue_unstarted(self, handle: WorkerHandle, exitcode: Optional[int]) -> None:
        """The jobs a gone worker held but had not started run elsewhere, ahead of the queue."""
        jobs = handle.take_ahead()
        if jobs and handle.moved_on and handle.failure is not None:
            # It replied to the job we killed it for, so it had started the next one.
            self._outcomes.fail(jobs.pop(0), WorkerCrashedError(handle.pid, exitcode))
        jobs = [job for job in jobs if not job.killed]
        if not jobs:
            return
        if self._terminating or self._broken is not None:
            for job in jobs:
                self._outcomes.fail(job, self._broken or JobKilledError("the pool was terminated"))
            return
        self._returned.extendleft(reversed(jobs))

    def _fail_returned(self, error: BaseException) -> None:
        while self._returned:
            self._outcomes.fail(self._returned.popleft(), error)

    def _waiting(self) -> bool:
        """Whether jobs wait for a worker (queued, or returned by one)."""
        return bool(self._returned) or self._queue.qsize() > 0

    def _needs_workers(self) -> bool:
        """Whether a worker that left must be replaced.

        Closing (``shutdown``) still runs every queued job, so a worker recycled or crashed
        while jobs wait is replaced; otherwise those jobs would never resolve.
        """
        if self._terminating or self._broken is not None:
            return False
        return not self.closing or self._waiting()

    def _kill_all(self) -> None:
        self._fail_returned(JobKilledError("the pool was terminated"))
        for handle in self._handles:
            if not handle.retiring or handle.process.exitcode is None:
                handle.kill(handle.failure or JobKilledError("the pool was terminated"))

    def _break(self, error: BaseException) -> None:
        """The pool cannot run jobs (its workers cannot start): fail everything, stop."""
        if self._broken is not None:
            return
        self._broken = error
        self.closing = True
        self._on_broken(error)
        for job in self._queue.drain():
            self._outcomes.fail_pending(job, error)
        self._fail_returned(error)
        for handle in self._handles:
            if handle.job is not None:
                handle.kill(error)
            else:
                handle.kill()

    # --- jobs -----------------------------------------------------------------------------------

    def _assign_jobs(self) -> None:
        if self.idle_workers <= 0 or self._terminating:
            return
        for handle in self._handles:
            if not handle.idle:
                continue
            job = self._next_job()
            if job is None:
                return
            self.idle_workers -= 1
            try:
                handle.run(job)
            except OSError:  # the worker died under us: its sentinel fails the job
                pass

    def _next_job(self) -> Optional[Job]:
        if self._returned:
            return self._returned.popleft()
        while True:
            job = self._queue.get_nowait()
            if job is None:
                return None
            if self._outcomes.start(job):
                return job

    def _send_ahead(self) -> None:
        """Give busy workers whose jobs are short their next jobs now (see _ahead)."""
        if self._max_jobs is not None or self._terminating or not self._waiting():
            return
        now = time.monotonic()
        for handle in self._handles:
            while handle.can_take_ahead(now):
                job = self._next_job_for(handle)
                if job is None:
                    break
                try:
                    handle.run(job)
                except OSError:  # the worker died under us: its exit requeues the job
                    break
            if not self._waiting():
                return

    def _next_job_for(self, handle: WorkerHandle) -> Optional[Job]:
        """The next job if it may wait in ``handle``'s pipe; else None, and it stays first."""
        returned = self._returned
        if returned:
            return returned.popleft() if handle.fits_ahead(returned[0]) else None
        while True:
            job = self._queue.get_nowait()
            if job is None:
                return None
            if not handle.fits_ahead(job):
                self._queue.put_back(job)
                return None
            if self._outcomes.start(job):
                return job

    def _stop_when_drained(self) -> None:
        if not self.closing:
            return
        if self._waiting() and not self._terminating and self._broken is None:
            return
        for handle in self._handles:
            if handle.idle or (not handle.ready and not handle.retiring):
                handle.stop()

    def _seconds_to_next_deadline(self) -> Optional[float]:
        """Until the nearest job deadline or recall (see _ahead), or None."""
        nearest = None
        for handle in self._handles:
            for deadline in (handle.deadline, handle.recall_at):
                if deadline is not None and (nearest is None or deadline < nearest):
                    nearest = deadline
        if nearest is None:
            return None
        return max(0.0, nearest - time.monotonic())

    def _expire_deadlines(self) -> None:
        now = time.monotonic()
        for handle in self._handles:
            recall_at = handle.recall_at
            if recall_at is not None and recall_at <= now:
                handle.recall()
            if handle.deadline is not None and handle.deadline <= now and handle.job is not None:
                assert handle.job.timeout is not None
                handle.deadline = None
                handle.kill(JobTimeoutError(handle.job.timeout))

    def kill_job(self, future: Future[Any]) -> bool:
        for handle in self._handles:
            if handle.job is not None and handle.job.future is future and handle.failure is None:
                handle.kill(JobKilledError("job killed by Pool.kill(); its worker was replaced"))
                return True
            for job in handle.ahead:
                if job.future is future and not job.killed:
                    # Waiting behind another job: it fails now and is taken back unstarted; if
                    # it starts first, its worker is killed then (_handle_message).
                    job.killed = True
                    self._outcomes.fail(job, JobKilledError(_KILLED_MESSAGE))
                    if not handle.recalling:
                        handle.recall()
                    return True
        for job in self._returned:
            if job.future is future and not job.killed:
                job.killed = True
                self._outcomes.fail(job, JobKilledError(_KILLED_MESSAGE))
                self._returned.remove(job)
                return True
        return False

    def worker_count(self) -> int:
        return len(self._handles)
