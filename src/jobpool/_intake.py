"""Where jobs enter a pool: its lifecycle state, its bounded queue and its backend, in one place.

``Pool`` and its :class:`~jobpool.JobOptions` views build jobs and hand them to the pool's
:class:`Intake`; so does the asyncio front end (``_async``), which receives the intake, never the
pool. Everything that decides whether a job is accepted lives here: the pool's state (open,
closed, broken), the refusal messages, backpressure, and what a ``map`` settles once for all its
chunks (:class:`MapPlan`).
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional

from . import _lifecycle
from ._errors import InitializerError, SchedulerLostError
from ._job import Chunk, ChunkResult, Job, JobQueue, Outcomes, Serialized
from ._map import as_items, windowed_map
from ._progress import (
    ErrorCallback,
    ProgressArg,
    Reporter,
    capture_failures,
    make_reporter,
    sized_total,
)

if TYPE_CHECKING:
    from ._contract import Backend, PreparedFunction


class PoolState(enum.Enum):
    OPEN = "open"  # accepts jobs
    CLOSED = "closed"  # shutdown() was called: queued jobs finish, new ones are refused
    BROKEN = "broken"  # workers cannot start (initializer failed): every job fails
    # A forked child's copy of a pool its parent owns: its workers, threads and pipes are the
    # parent's, so the child may not use it, nor close it (see Intake.forked).
    INHERITED = "inherited"


_OPEN = PoolState.OPEN  # a plain global: each submit checks it twice, and enum lookups cost


def check_positive_int(name: str, value: object) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def check_timeout(name: str, value: object) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def check_callable(where: str, fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"{where} needs a callable as its first argument, got {fn!r}")


class MapPlan:
    """What a ``map``/``amap`` call settles once, before its first chunk."""

    __slots__ = (
        "chunksize",
        "fn",
        "function",
        "job_timeout",
        "memory_limit",
        "reporter",
        "timeout",
        "window",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        function: PreparedFunction,
        job_timeout: Optional[float],
        chunksize: Optional[int],
        window: int,
        timeout: Optional[float],
        reporter: Optional[Reporter],
        memory_limit: Optional[int] = None,
    ) -> None:
        self.fn = fn
        self.memory_limit = memory_limit  # per chunk: a chunk runs in one worker
        self.function = function  # serialized once for every chunk (process and Dask backends)
        self.job_timeout = job_timeout
        self.chunksize = chunksize
        self.window = window
        self.timeout = timeout
        self.reporter = reporter

    def chunk_job(self, chunk: list[Any], star: bool) -> Job:
        job = Job(Chunk(self.fn, chunk, star), self.job_timeout, self.memory_limit)
        if self.function[0] is not None:  # serialized once for every chunk
            job.serialized = Serialized(*self.function)
        return job


class Intake:
    """Accepts jobs for one pool while it is open; refuses them, saying why, once it is not.

    A pool belongs to the process that created it (``owner``). A child forked from that process
    inherits a copy of the pool object, but not its threads, and shares its pipes: a job it
    submitted would be written to the parent's workers (whose replies the parent then reads as
    out of turn) or queued for threads that do not exist. So the copy refuses every call, with
    the fix (a new pool in the child), and its ``shutdown()`` leaves the parent's pool alone.
    """

    def __init__(self, queue: JobQueue, outcomes: Outcomes, workers: int) -> None:
        self.queue = queue
        self.outcomes = outcomes
        self.workers = workers
        self.backend: Backend  # set by the pool once it has made it
        self.owner = _lifecycle.pid
        self.state = PoolState.OPEN
        self.broken: Optional[BaseException] = None
        self._lock = threading.Lock()
        self._slot_waiter: Optional[ThreadPoolExecutor] = None

    # --- the lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new jobs from now on (``shutdown``, ``terminate``)."""
        with self._lock:
            if self.state is PoolState.OPEN:
                self.state = PoolState.CLOSED
            waiter, self._slot_waiter = self._slot_waiter, None
        if waiter is not None:
            waiter.shutdown(wait=False)

    def cancel_waiting(self) -> None:
        """Cancel every job still in the queue."""
        for job in self.queue.drain():
            self.outcomes.cancel_pending(job)

    def mark_broken(self, error: BaseException) -> None:
        """Workers cannot start: fail what waits, and refuse every new job with ``error``."""
        with self._lock:
            self.broken = error
            self.state = PoolState.BROKEN
        for job in self.queue.drain():
            self.outcomes.fail_pending(job, error)

    def refuse(self) -> None:
        if self.state is PoolState.INHERITED or not self.in_owner():
            self.refuse_here()
        if self.state is PoolState.BROKEN:
            if isinstance(self.broken, SchedulerLostError):  # the same class, a fresh traceback
                raise SchedulerLostError(str(self.broken), self.broken.address) from self.broken
            raise InitializerError(str(self.broken)) from self.broken
        raise RuntimeError("cannot schedule new futures after shutdown")

    # --- the process that owns the pool --------------------------------------------------------

    def in_owner(self) -> bool:
        """Whether this is the process that created the pool (not a child forked from it)."""
        return _lifecycle.pid == self.owner

    def forked(self) -> None:
        """In a forked child (``os.register_at_fork``, see _lifecycle): refuse every call from
        now on. Its lock is new: the inherited one may be held by a thread that is not here."""
        self._lock = threading.Lock()
        self._slot_waiter = None
        self.state = PoolState.INHERITED

    def refuse_here(self) -> NoReturn:
        """Raise the error for a pool used in a process that did not create it."""
        raise RuntimeError(
            f"this pool was created by process {self.owner} and cannot be used in process "
            f"{os.getpid()}, a child forked from it: its workers are the parent's. Create a "
            "new Pool in the child (the parent's pool goes on serving the parent)."
        )

    # --- jobs ----------------------------------------------------------------------------------

    def enqueue(self, job: Job, block: bool) -> Future[Any]:
        """Accept ``job``: serialize it here, then start it or queue it (waiting if ``block``)."""
        if self.state is not _OPEN:
            self.refuse()
        backend = self.backend
        backend.prepare(job)
        job.future._owner = self
        try:
            # Straight to an idle worker, nothing to queue. No lock needed: a backend that is
            # shutting down refuses, and the job falls through to the refusal below.
            if backend.offer(job):
                self.outcomes.count_submitted()
                return job.future
            self._put(job, block)
        except BaseException:
            # Refused (QueueFull, closed, interrupted): what the backend prepared is let go
            # now, not when the job is collected. A caller that tries again (asyncio's run)
            # prepares it again.
            backend.refused(job)
            raise
        self.outcomes.count_submitted()
        backend.notify()
        return job.future

    def _put(self, job: Job, block: bool) -> None:
        """Queue ``job``, taking a slot of the bounded queue first (waiting for one if asked)."""
        queue = self.queue
        if queue.bounded:
            queue.reserve(job, block)

            def free_slot_if_cancelled(future: Future[Any]) -> None:
                if future.cancelled():  # a cancelled job frees its slot now, not when dequeued
                    queue.release(job)

            job.future.add_done_callback(free_slot_if_cancelled)
        with self._lock:
            if self.state is not _OPEN:
                queue.release(job)
                self.refuse()
            queue.put(job)

    def slot_waiter(self) -> ThreadPoolExecutor:
        """The pool's one helper thread that waits for queue slots for coroutines (``_async``);
        made on first need, shut down with the pool."""
        if not self.in_owner():
            self.refuse_here()
        with self._lock:
            if self._slot_waiter is None:
                if self.state is not _OPEN:
                    self.refuse()
                self._slot_waiter = ThreadPoolExecutor(1, thread_name_prefix="jobpool-async-submit")
            return self._slot_waiter

    # --- map -----------------------------------------------------------------------------------

    def plan_map(
        self,
        where: str,
        fn: Callable[..., Any],
        iterables: tuple[Any, ...],
        *,
        timeout: Optional[float],
        chunksize: Optional[int],
        buffersize: Optional[int],
        job_timeout: Optional[float],
        memory_limit: Optional[int] = None,
        progress: ProgressArg,
        on_result: Optional[Callable[[Any], object]],
        on_error: Optional[ErrorCallback],
    ) -> MapPlan:
        """Check a map call's arguments and settle what all its chunks share (map and amap)."""
        check_callable(f"{where}()", fn)
        if not iterables:
            raise TypeError(f"{where}() needs at least one iterable")
        chunksize = check_positive_int("chunksize", chunksize)
        buffersize = check_positive_int("buffersize", buffersize)
        if job_timeout is not None and chunksize is None:
            chunksize = 1  # a time limit is per item unless the caller chose chunks
        if self.state is not _OPEN or not self.in_owner():
            self.refuse()
        return MapPlan(
            fn,
            self.backend.prepare_function(fn),
            job_timeout,
            chunksize,
            buffersize or 2 * self.workers,
            None if timeout is None else float(timeout),
            make_reporter(progress, on_result, on_error, sized_total(iterables), fn),
            memory_limit,
        )

    def map(
        self, plan: MapPlan, iterables: tuple[Iterable[Any], ...], star: bool, ordered: bool
    ) -> Iterator[Any]:
        """Run a planned ``map`` (``star``: each item is already a tuple of arguments)."""
        if star:
            items: Iterator[Any] = iter(iterables[0])
        else:
            items, star = as_items(iterables)

        def submit_chunk(chunk: list[Any]) -> Future[ChunkResult]:
            return self.enqueue(plan.chunk_job(chunk, star), block=True)

        reporter = plan.reporter
        try:
            results = windowed_map(
                submit_chunk if reporter is None else capture_failures(submit_chunk),
                items,
                chunksize=plan.chunksize,
                window=plan.window,
                ordered=ordered,
                timeout=plan.timeout,
            )
        except BaseException:
            if reporter is not None:
                reporter.close()  # a bar made for this map must not stay open
            raise
        return results if reporter is None else reporter.follow(results)
