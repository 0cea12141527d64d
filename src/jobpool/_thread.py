"""The thread backend: N worker threads taking jobs from the pool's queue.

Shaped after ``concurrent.futures.thread``: threads start lazily, one per submission until
``workers`` exist, unless an idle one can take the job. A thread cannot be stopped, so a job
that times out (or is killed) fails its future on time, and its thread is *abandoned*: it runs on
until the function returns, then exits, while a fresh thread takes its place so the pool keeps
``workers`` threads serving the queue.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future
from typing import Any, Callable, Optional

from ._contract import NOT_SERIALIZED, BackendSetup, PreparedFunction
from ._deadlines import DeadlineTimer
from ._errors import JobKilledError, JobTimeoutError, initializer_error
from ._instances import for_worker_thread
from ._job import Job

TERMINATED = "the pool was terminated"


class ThreadBackend:
    name = "thread"
    kill_limitation = None  # a running job's future fails at once; its thread runs on
    read_reply = None  # a waiting thread waits on the future
    serializes = False  # prepare() costs nothing: jobs may be admitted from any thread
    #: Worker threads are named this and a number (ThreadPoolExecutor sets its own).
    name_prefix = "jobpool-thread-"

    def __init__(self, setup: BackendSetup) -> None:
        self._queue = setup.queue
        self._outcomes = setup.outcomes
        self._workers = setup.workers
        self._initializer = setup.initializer
        self._initargs = setup.initargs
        self._on_broken = setup.on_broken
        self._threads: set[threading.Thread] = set()
        # The job each thread runs now, and the threads given up on (a timeout or a kill failed
        # their job): they run on until it returns, then exit. A job enters _current as it
        # starts, under _lock (kill() and terminate() look there under it); it leaves, and a
        # thread is given up on, under _abandon_lock, so that a job that returns and one that is
        # given up on cannot both win.
        self._current: dict[threading.Thread, Job] = {}
        self._abandoned: set[threading.Thread] = set()
        self._lock = threading.Lock()
        # Notified when a thread stops serving (it exits, or its job is abandoned).
        self._serving_changed = threading.Condition(self._lock)
        self._idle = threading.Semaphore(0)
        self._abandon_lock = threading.Lock()
        self._timer: Optional[DeadlineTimer] = None
        self._closing = False
        self._terminated = False  # terminate(): a job that starts now fails instead
        self._serving = 0  # threads that serve the queue (abandoned ones excluded)

    def prepare(self, job: Job) -> None:
        """Threads share memory: nothing to serialize."""

    def prepare_function(self, fn: Callable[..., Any]) -> PreparedFunction:
        return NOT_SERIALIZED

    def offer(self, job: Job) -> bool:
        """Jobs always go through the queue, which the worker threads read directly."""
        return False

    def refused(self, job: Job) -> None:
        """Nothing was prepared."""

    def notify(self) -> None:
        """A job was queued: wake an idle thread, or start one if fewer than ``workers`` serve."""
        if self._serving >= self._workers:
            return  # every thread exists and takes jobs from the queue: nothing to decide
        if self._idle.acquire(timeout=0):
            return
        with self._lock:
            if self._serving >= self._workers or self._closing:
                return
            thread = self._new_thread()
        self._start(thread)

    def start_all(self) -> None:
        """Start every thread now, not as jobs come: ``multiprocessing.pool.ThreadPool`` does
        (its drop-in, ``jobpool.multiprocessing``, too), and jobs that wait on I/O then find
        their threads there instead of each submit starting one while the others run."""
        with self._lock:
            threads = []
            while self._serving < self._workers and not self._closing:
                threads.append(self._new_thread())
        for i, thread in enumerate(threads):
            try:
                self._start(thread)
            except BaseException:
                for unstarted in threads[i + 1 :]:
                    self._never_started(unstarted)
                raise

    def _new_thread(self) -> threading.Thread:
        """A thread that serves the queue, counted as serving from now on (``shutdown`` waits
        until none serves before it joins them, so it joins only threads that started); called
        under the lock, then started with ``_start`` outside it."""
        self._serving += 1
        thread = threading.Thread(
            target=self._work, name=f"{self.name_prefix}{len(self._threads)}", daemon=True
        )
        self._threads.add(thread)
        return thread

    def _start(self, thread: threading.Thread) -> None:
        """Start a thread made by ``_new_thread``. Not under the lock: ``start()`` waits for the
        new thread to run, and threads finishing jobs meanwhile would queue on the lock (2,000
        trivial jobs on 50 threads took twice as long as on ThreadPoolExecutor)."""
        try:
            thread.start()
        except BaseException:  # no thread to be had (RuntimeError)
            self._never_started(thread)
            raise

    def _never_started(self, thread: threading.Thread) -> None:
        """A thread from ``_new_thread`` that did not start: it was never serving."""
        with self._lock:
            self._threads.discard(thread)
        self._stop_serving()

    def _work(self) -> None:
        with for_worker_thread():  # per_worker: this thread's own instances, closed as it ends
            self._serve()

    def _serve(self) -> None:
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException as exc:
                self._on_broken(
                    initializer_error(exc, f"in thread {threading.current_thread().name}")
                )
                self._stop_serving()
                return
        queue, outcomes, me = self._queue, self._outcomes, threading.current_thread()
        while True:
            job = queue.get()
            if job is None:
                queue.put(None)  # let the other threads see it too
                self._stop_serving()
                return
            # Started and made known to kill() and terminate() at once, under the lock they
            # take: a running job is always found there (kill() of a job that had just started
            # returned False, and terminate() let it run).
            with self._lock:
                terminated = self._terminated
                started = not terminated and outcomes.start(job)
                if started:
                    self._current[me] = job
            if terminated:  # taken out of the queue as terminate() cancelled the rest
                outcomes.cancel_pending(job)
                continue
            if not started:
                continue
            if job.timeout is not None:
                self._timer_for_jobs().add(job.timeout, functools.partial(self._expire, job))
            try:
                outcomes.succeed(job, job.work.run())
            except BaseException as exc:
                outcomes.fail(job, exc)
            with self._abandon_lock:
                del self._current[me]  # finished: it can no longer be given up on
                if me in self._abandoned:
                    self._abandoned.discard(me)
                    return
            # Do not keep the finished job (its function, arguments and result) alive while
            # this thread waits for the next one: callers expect them to be freed.
            del job
            if self._serving < self._workers:  # the idle count only matters while growing
                self._idle.release()

    def _stop_serving(self) -> None:
        """This thread serves the queue no more (it exits, or its job was abandoned).

        Once the pool is closing and no thread serves, no job can start or run unobserved any
        more: the timer of time limits goes then, not before (a job that runs, or still waits,
        when ``shutdown(wait=False)`` returns keeps its limit).
        """
        with self._lock:
            self._serving -= 1  # stats().workers: threads that still serve
            self._serving_changed.notify_all()
            done = self._closing and self._serving <= 0
        if done:
            self._close_timer()

    def _timer_for_jobs(self) -> DeadlineTimer:
        if self._timer is None:
            with self._lock:
                if self._timer is None:
                    self._timer = DeadlineTimer("jobpool-thread-timeouts")
        return self._timer

    def _close_timer(self) -> None:
        """No job can need a deadline any more: close the timer, or make sure none starts (a
        thread whose job was abandoned on its way in adds its deadline to a closed timer,
        which ignores it, instead of starting a timer thread that nothing would close)."""
        with self._lock:
            if self._timer is None:
                self._timer = DeadlineTimer("jobpool-thread-timeouts")  # starts no thread
            timer = self._timer
        timer.close()

    def _abandon(self, job: Job, error: BaseException, timed_out: bool) -> bool:
        """Fail a running job now and replace its thread, which runs on until the call returns."""
        with self._abandon_lock:
            running = list(self._current.items())  # a copy: threads add theirs without the lock
            thread = next((t for t, current in running if current is job), None)
            if thread is None or thread in self._abandoned:  # it returned, or was given up on
                return False
            self._abandoned.add(thread)
        # The job may have returned just now (its result set, its thread not yet out of
        # _current): then it keeps its result and kill() reports False, but the thread is given
        # up on all the same.
        failed = self._outcomes.fail(job, error, timed_out=timed_out)
        with self._lock:
            # Replaced while closing too: a shutdown still runs the jobs that wait (a new thread
            # finds the end of the queue at once when none does).
            thread = self._new_thread()
            # PoolStats.worker_restarts counts abandoned threads replaced, as it counts
            # worker processes replaced on the process backend.
            self._outcomes.count("worker_restarts")
        self._start(thread)
        self._stop_serving()
        return failed

    def _expire(self, job: Job) -> None:
        assert job.timeout is not None
        self._abandon(job, JobTimeoutError(job.timeout), timed_out=True)

    def kill(self, future: Future[Any]) -> bool:
        """Fail a running job with JobKilledError; its thread runs on, abandoned."""
        # A thread given up on may still run an earlier attempt of the same job (retries): the
        # attempt to stop is the one a serving thread runs.
        with self._lock:
            job = next(
                (
                    job
                    for thread, job in self._current.items()
                    if job.future is future and thread not in self._abandoned
                ),
                None,
            )
        if job is None:
            return False
        return self._abandon(
            job,
            JobKilledError("job killed by Pool.kill(); its thread runs on until the call returns"),
            timed_out=False,
        )

    def worker_count(self) -> int:
        return self._serving

    def shutdown(self, wait: bool) -> None:
        """Let the threads run what waits, then end; with ``wait``, until they have.

        Not for abandoned threads (their jobs have failed), including those abandoned while this
        waits: a job that passes its time limit now fails and its thread is left to run on.
        """
        with self._lock:
            self._closing = True
            idle = self._serving <= 0
        self._queue.put(None)
        if idle:
            self._close_timer()
        if not wait:
            return
        with self._lock:
            self._serving_changed.wait_for(lambda: self._serving <= 0)
            threads = list(self._threads)
        for thread in threads:  # they have stopped serving: only their exit is left
            if thread in self._abandoned:  # its job runs on, unobserved
                continue
            thread.join()

    def terminate(self) -> None:
        """Stop as fast as threads allow: fail what runs now, let the threads finish unobserved."""
        with self._lock:
            self._closing = True
            self._terminated = True  # a job that a thread is starting now fails (see _serve)
            running = list(self._current.values())
        self._queue.put(None)
        for job in running:
            self._abandon(job, JobKilledError(TERMINATED), timed_out=False)
        self._close_timer()
