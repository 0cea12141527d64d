"""Where jobs enter a pool: its lifecycle state, its bounded queue and its backend, in one place.

``Pool`` and its :class:`~jobpool.JobOptions` views build jobs and hand them to the pool's
:class:`Intake`; so does the asyncio front end (``_async``), which receives the intake, never the
pool. Everything that decides whether a job is accepted lives here: the pool's state (open,
closed, broken), the refusal messages, backpressure, and what a ``map`` settles once for all its
chunks (:class:`MapPlan`).
"""

from __future__ import annotations

import enum
import functools
import os
import threading
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional

from . import _lifecycle
from ._arguments import find_inputs
from ._dependencies import Dependencies
from ._errors import InitializerError, SchedulerLostError, SerializationError
from ._job import Call, Chunk, ChunkResult, Job, JobQueue, Outcomes, Serialized
from ._map import as_items, windowed_map
from ._progress import (
    ErrorCallback,
    ProgressArg,
    Reporter,
    capture_failures,
    make_reporter,
    sized_total,
)
from ._retry import Attempts, FirstAttempts, Retries
from ._retry_policy import RetryPolicy

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
        "first_attempts",
        "fn",
        "function",
        "job_timeout",
        "memory_limit",
        "priority",
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
        priority: int = 0,
        memory_limit: Optional[int] = None,
        first_attempts: Optional[FirstAttempts] = None,
    ) -> None:
        self.fn = fn
        self.priority = priority
        self.memory_limit = memory_limit  # per chunk: a chunk runs in one worker
        # With retries, what its chunks carry in their first attempt: each item that raises
        # may run again.
        self.first_attempts = first_attempts
        self.function = function  # serialized once for every chunk (process and Dask backends)
        self.job_timeout = job_timeout
        self.chunksize = chunksize
        self.window = window
        self.timeout = timeout
        self.reporter = reporter

    def chunk_job(self, chunk: list[Any], star: bool) -> Job:
        job = Job(Chunk(self.fn, chunk, star), self.job_timeout, self.priority, self.memory_limit)
        if self.function[0] is not None:  # serialized once for every chunk
            job.serialized = Serialized(*self.function)
        job.retry = self.first_attempts
        return job


def _after_retries(retries: Retries, call: Callable[[], None]) -> None:
    """``call()`` once no job may be retried; then the retries' timer ends."""
    retries.when_settled(call)
    retries.when_settled(retries.close)


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
        self._dependencies: Optional[Dependencies] = None
        self._retries: Optional[Retries] = None
        self.terminated = False  # Pool.terminate(): jobs still to be admitted are cancelled
        # Futures among a job's arguments are replaced by their results (_dependencies); the
        # standard library's dialects turn this off: there, an argument is passed as it is.
        self.futures_as_arguments = True
        self.pool: Optional[weakref.ReferenceType[Any]] = None  # set by the Pool it serves

    # --- the lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new jobs from now on (``shutdown``, ``terminate``)."""
        with self._lock:
            if self.state is PoolState.OPEN:
                self.state = PoolState.CLOSED
            waiter, self._slot_waiter = self._slot_waiter, None
        if waiter is not None:
            waiter.shutdown(wait=False)

    def terminate(self) -> None:
        """``Pool.terminate``: refuse new jobs, cancel what waits, and whatever would still
        join the queue later (a job whose inputs are done as this runs)."""
        self.close()
        self.terminated = True
        self.cancel_waiting()
        if self._retries is not None:  # it retries nothing from now on (cancel_waiting)
            self._retries.close()

    def cancel_waiting(self) -> None:
        """Cancel every job still in the queue, waiting for its inputs, or for its next attempt
        (and retry none from now on)."""
        if self._retries is not None:
            self._retries.cancel_all()
        if self._dependencies is not None:
            self._dependencies.cancel_all()
        for job in self.queue.drain():
            self.outcomes.cancel_pending(job)

    def mark_broken(self, error: BaseException) -> None:
        """Workers cannot start: fail what waits, and refuse every new job with ``error``."""
        with self._lock:
            self.broken = error
            self.state = PoolState.BROKEN
        if self._retries is not None:
            self._retries.fail_all(error)
        if self._dependencies is not None:
            self._dependencies.fail_all(error)
        for job in self.queue.drain():
            self.outcomes.fail_pending(job, error)

    def after_inputs(self, call: Callable[[], None], wait: bool) -> None:
        """``call()`` once every job accepted so far waits for no input any more (it is queued,
        or failed), and none may be retried any more (each with retries is done: its next
        attempt needs the workers): at once if none is left; with ``wait``, block until then
        and call it here."""
        dependencies = self._dependencies
        retries = self._retries
        if retries is not None:
            call = functools.partial(_after_retries, retries, call)
        if dependencies is None:
            if wait and retries is not None:
                retries.wait_settled()
            call()
            return
        dependencies.close()
        if wait:
            dependencies.wait_settled()
            if retries is not None:
                retries.wait_settled()
            call()
        else:
            dependencies.when_settled(call)

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

    def enqueue(
        self, job: Job, block: bool, look_for_futures: bool = True, tracked: bool = False
    ) -> Future[Any]:
        """Accept ``job``: serialize it here, then start it or queue it (waiting if ``block``).

        A job with futures among its arguments waits for them first (``_dependencies``, which
        passes ``look_for_futures=False`` once they are done). A job with retries is counted
        among those that may retry first, unless it is already (``tracked``: by the caller).
        """
        if self.state is not _OPEN:
            self.refuse()
        retry = job.retry
        if retry is not None and not tracked and not retry.is_tracked(job):
            return self._enqueue_tracked(job, retry, block, look_for_futures)
        look_for_futures = look_for_futures and self.futures_as_arguments
        backend = self.backend
        # A call's arguments are looked at (by type: cheap); a map chunk's items too on
        # threads, but where they are pickled anyway, only if that fails: a future never pickles.
        if look_for_futures and (type(job.work) is Call or not backend.serializes):
            found = find_inputs(job.work)
            if found is not None:
                return self.dependencies().accept(job, found, block)
        try:
            backend.prepare(job)
        except SerializationError:
            found = find_inputs(job.work) if look_for_futures else None
            if found is None:
                raise
            return self.dependencies().accept(job, found, block)
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

    def _enqueue_tracked(
        self, job: Job, retry: Attempts | FirstAttempts, block: bool, look_for_futures: bool
    ) -> Future[Any]:
        """A job with retries: counted before it can fail (``shutdown`` waits for it to end, as
        a retry must find the workers there), and let go if it is refused."""
        retry.track(job)
        try:
            return self.enqueue(job, block, look_for_futures, tracked=True)
        except BaseException:
            retry.untrack(job)
            raise

    def enqueue_retried(self, job: Job, first: FirstAttempts, block: bool) -> Future[Any]:
        """``enqueue`` for a call with retries (``submit``), its tracking in one step, as every
        such job takes it: ``first`` is its pool's or view's (see ``_retry.FirstAttempts``)."""
        job.retry = first
        retries = first.pool_retries
        retries.track(job)
        try:
            return self.enqueue(job, block, tracked=True)
        except BaseException:
            retries.end(job)
            raise

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

    # --- jobs whose arguments hold futures (see _dependencies) ----------------------------------

    def dependencies(self) -> Dependencies:
        """The pool's jobs that wait for their inputs; made on first need."""
        if self._dependencies is None:
            with self._lock:
                if self._dependencies is None:
                    self._dependencies = Dependencies(self)
                    self._dependencies.pool = self.pool
        return self._dependencies

    def accepting(self) -> bool:
        return self.state is _OPEN

    def take_slot(self, job: Job, block: bool) -> None:
        """A slot of the bounded queue for a job that waits for its inputs (it keeps it while
        it waits, then in the queue), freed at once if the job is cancelled."""
        self.queue.reserve(job, block)

    def admit(self, job: Job, prepared: bool = False) -> None:
        """Queue a job accepted earlier whose inputs are now done (from any thread; it never
        waits for a slot: it took one when accepted, or needs none). Refused only by a broken
        pool, whose error it then fails with; a closed pool still runs it. ``prepared``: it
        was serialized already."""
        if not prepared:
            self.backend.prepare(job)
        with self._lock:
            if self.state is PoolState.BROKEN or self.state is PoolState.INHERITED:
                self.refuse()
            if self.terminated:
                job.future.cancel()
                self.queue.release(job)
                self.outcomes.cancel_pending(job)
                return
            self.queue.put(job)
        self.backend.notify()

    # --- jobs with retries (see _retry) -----------------------------------------------------------

    def retries(self) -> Retries:
        """The pool's jobs that may retry, and those waiting to; made on first need."""
        if self._retries is None:
            with self._lock:
                if self._retries is None:
                    retries = Retries(self, self.outcomes)
                    retries.pool = self.pool
                    self._retries = retries
        return self._retries

    def with_retries(self, job: Job, first: FirstAttempts) -> None:
        """``job`` (not yet accepted) is retried as ``first``'s policy says (``run``: its
        ``enqueue`` counts it among the jobs that may retry)."""
        job.retry = first

    def first_attempts(self, policy: RetryPolicy) -> FirstAttempts:
        """What the calls of a pool or view with ``policy`` carry in their first attempt."""
        return FirstAttempts(policy, self.retries())

    def waiting_to_retry(self) -> int:
        return 0 if self._retries is None else self._retries.count_waiting()

    def waiting_for_inputs(self) -> int:
        return 0 if self._dependencies is None else self._dependencies.count()

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
        priority: int = 0,
        retry: Optional[RetryPolicy] = None,
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
            priority,
            memory_limit,
            None if retry is None else FirstAttempts(retry, self.retries(), chunk=True),
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
