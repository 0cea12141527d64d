"""What a job is while it travels: the work to run, its future, its limits, and its queue.

A :class:`Job` is created by ``submit`` and resolved exactly once, by whoever gets there first:
the worker's result, a timeout, a kill or a crash. :class:`Outcomes` is that single door; it
swallows the loser of such a race, so a result that arrives after a timeout never overwrites it.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable, Literal, Optional

from ._condition import FutureCondition
from ._errors import QueueFull, SerializationError
from ._pickling_advice import explain_failure
from ._priority import SWITCHED, RankedQueue
from ._retry import FAIL, RETRIED, STALE, SUCCEED, Attempts, FirstAttempts
from ._serialization import dumps
from ._work import CHUNK_REBUILDERS as CHUNK_REBUILDERS  # the work's parts, for importers
from ._work import Call as Call
from ._work import Chunk as Chunk
from ._work import ChunkResult as ChunkResult
from ._work import run_chunk as run_chunk

#: What cancelling the asyncio task awaiting a running job does to it (``options(on_cancel=)``).
OnCancel = Literal["kill", "leave"]
ON_CANCEL = ("kill", "leave")

# concurrent.futures' names for the states of a started and a resolved future
_PENDING = "PENDING"
_RUNNING = "RUNNING"
_FINISHED = "FINISHED"
_job_ids = itertools.count()


def chunk_outcomes(future: Future[ChunkResult], count: int) -> Iterator[tuple[bool, Any]]:
    """Per-item outcomes of a finished chunk job (see :meth:`ChunkResult.outcomes`); a chunk
    that failed as a whole (its worker crashed, it timed out or was killed) fails each item."""
    exc = future.exception(timeout=0)
    if exc is not None:
        return iter([(False, exc)] * count)
    return future.result(timeout=0).outcomes()


class JobFuture(Future[Any]):
    """A :class:`~concurrent.futures.Future` whose waiter may fetch the reply itself.

    While the job runs, ``result()`` and ``exception()`` first offer the pool's backend to read
    the reply in the waiting thread (``Backend.read_reply``): the process backend reads its
    worker's reply there instead of sleeping until the dispatcher thread passes it on, one
    thread wake-up fewer per round trip. With any other backend (whose ``read_reply`` is None),
    and in any state but running, it behaves exactly like the stdlib Future.
    """

    # The intake of the pool that accepted the job: Pool.kill() asks whose future it is, and
    # result() its backend's reader.
    _owner: Any = None
    # The job waits for a future that no pool of jobpool resolves on its own (see
    # _dependencies): set on the job's own future only, so most futures never carry it.
    _waits_outside = False
    # Called once if the future is cancelled: a job waiting for its inputs lets them go, a job
    # waiting for its next attempt leaves the timer.
    _on_cancel: Optional[Callable[[], None]] = None
    # The job's attempts, once it has failed with retries (see _retry).
    _retry: Optional[Attempts] = None
    # Pool.kill() was called for it: no more retries (read by every retry decision).
    _retries_stopped = False

    def __init__(self) -> None:
        # Future.__init__'s attributes, with a lighter condition (see _condition.py). A Python
        # whose Future keeps other attributes gets Future.__init__ and only the condition swapped.
        if _SAME_ATTRIBUTES:
            self._state = _PENDING
            self._result = None
            self._exception = None
            self._waiters: list[Any] = []
            self._done_callbacks: list[Callable[[Future[Any]], object]] = []
        else:
            Future.__init__(self)
        self._condition = FutureCondition()  # type: ignore[assignment]

    def __reduce__(self) -> Any:
        # At once, without pickling its state (its result, its callbacks) first: a map chunk
        # whose pickle fails is then searched for futures (see Intake.enqueue).
        raise TypeError("a Future cannot be pickled: it lives in the process that made it")

    def cancel(self) -> bool:
        cancelled = _future_cancel(self)
        hook = self._on_cancel
        if cancelled and hook is not None:
            self._on_cancel = None
            hook()
        return cancelled

    def result(self, timeout: Optional[float] = None) -> Any:
        if self._state == _RUNNING and self._owner is not None:
            timeout = self._read_reply(timeout)
            if self._state == _FINISHED and self._exception is None:
                return self._result  # set before the state, under the lock: safe to read
        return _future_result(self, timeout)

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        if self._state == _RUNNING and self._owner is not None:
            timeout = self._read_reply(timeout)
        return _future_exception(self, timeout)

    @property
    def resolved(self) -> bool:
        """Whether it has its outcome (or was cancelled), read without taking its lock, as on
        every reply: once True it stays True. (A job failed by Pool.kill() while it waited
        behind another must not run.)"""
        return self._state != _RUNNING and self._state != _PENDING

    def _read_reply(self, timeout: Optional[float]) -> Optional[float]:
        """Let the backend read the reply here, if it can; the time left of ``timeout``."""
        reader = self._owner.backend.read_reply
        if reader is None:
            return timeout
        if timeout is None:
            reader(self, None)
            return None
        deadline = time.monotonic() + timeout
        reader(self, timeout)
        return max(0.0, deadline - time.monotonic())


# Called directly rather than through super(): result() is on every job's path.
_future_result = Future.result
_future_exception = Future.exception
_future_cancel = Future.cancel
# JobFuture.__init__ sets these itself; where Future.__init__ sets others, it calls that instead.
_SAME_ATTRIBUTES = set(vars(Future())) == {
    "_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"
}  # fmt: skip


class Job:
    """A unit of work plus everything the pool needs to run it and resolve it once."""

    __slots__ = (
        "future",
        "holds_slot",
        "id",
        "memory_limit",
        "priority",
        "retry",
        "serialized",
        "timeout",
        "work",
    )

    def __init__(
        self,
        work: Call | Chunk,
        timeout: Optional[float],
        priority: int = 0,
        memory_limit: Optional[int] = None,
    ) -> None:
        self.future: JobFuture = JobFuture()
        self.work = work
        self.timeout = timeout
        self.priority = priority  # higher first among waiting jobs (see _priority)
        self.memory_limit = memory_limit  # bytes (job_memory_limit), process backend only
        self.id = next(_job_ids)
        self.holds_slot = False
        # What a backend that serializes (process, Dask) made of it in the submitting thread.
        self.serialized: Optional[Serialized] = None
        # With retries: its Attempts, or the pool's FirstAttempts in a call's first attempt.
        self.retry: Optional[Attempts | FirstAttempts] = None

    def following(self, work: Call | Chunk) -> Job:
        """The job's next attempt (see _retry): the same future, limits, priority and attempts;
        a new job, so that a late outcome of this one is known as stale. The same bytes for
        the same work; a chunk of fewer items keeps only its function's."""
        job = Job.__new__(Job)
        job.future = self.future
        job.work = work
        job.timeout = self.timeout
        job.priority = self.priority
        job.memory_limit = self.memory_limit
        job.id = next(_job_ids)
        job.holds_slot = False
        job.retry = self.retry
        old = self.serialized
        if work is self.work or old is None:
            job.serialized = old
        else:
            job.serialized = Serialized(old.fn_bytes, old.fn_key, old.fn_blobs)
            job.serialized.inputs = old.inputs
        return job


class Serialized:
    """A job as bytes, made in the submitting thread by a backend that serializes (process and
    Dask): its function (``map`` makes that once for all its chunks), and its arguments or items.
    """

    __slots__ = ("body", "fn_blobs", "fn_bytes", "fn_key", "inputs", "segment")

    def __init__(
        self,
        fn_bytes: Optional[bytes],
        fn_key: Optional[int] = None,
        fn_blobs: tuple[tuple[int, Any], ...] = (),
    ) -> None:
        self.fn_bytes = fn_bytes
        self.fn_key = fn_key  # process backend: the key each worker keeps the function under
        self.fn_blobs = fn_blobs  # process backend: the large values fn_bytes names by key
        self.body: bytes = b""  # the pickled (args, kwargs), or (items, star) of a chunk
        # Process backend: the shared memory holding the body's large buffers (_large_data),
        # freed when the job's future resolves.
        self.segment: Any = None
        # Dask backend: the values of the futures among its arguments, kept on the cluster
        # (_dask._inputs.ClusterInputs); None for a job that takes no futures.
        self.inputs: Any = None

    def size(self) -> int:
        """The bytes that travel in the message: body, and the function unless it is keyed."""
        return len(self.body) + (len(self.fn_bytes or b"") if self.fn_key is None else 0)


class Outcomes:
    """Resolves jobs exactly once and keeps the counts that ``Pool.stats()`` reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.submitted = 0
        self.started = 0
        self.done = 0
        self.failed = 0
        self.cancelled = 0
        self.timed_out = 0
        self.worker_restarts = 0
        self.over_memory_limit = 0
        self.recycled_for_memory = 0
        self.retried = 0  # attempts that failed and were run again (see _retry)

    def count(self, field: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + n)

    def count_submitted(self) -> None:
        """``count("submitted")`` without looking the field up by name: once per submit."""
        with self._lock:
            self.submitted += 1

    def start(self, job: Job) -> bool:
        """Mark the job running; False if it was cancelled while it waited."""
        if job.future.set_running_or_notify_cancel():
            with self._lock:
                self.started += 1
            return True
        with self._lock:
            self.cancelled += 1
        if job.retry is not None:
            job.retry.ended(job)
        return False

    def succeed(self, job: Job, value: Any) -> bool:
        if job.retry is not None:  # a job with retries: the map items that raised may retry
            outcome, value = job.retry.succeeded(job, value)
            if outcome != SUCCEED:
                return self._retried(outcome)
        try:  # as _succeed, inlined: every job's path
            job.future.set_result(value)
        except InvalidStateError:
            return False
        with self._lock:
            self.done += 1
        return True

    def fail(
        self, job: Job, exc: BaseException, timed_out: bool = False, over_memory: bool = False
    ) -> bool:
        """Fail the job, or (with retries) run it again later (see _retry). ``timed_out`` and
        ``over_memory`` (its job_memory_limit) are counted, as ``failed``, by the last attempt."""
        if job.retry is not None:
            outcome, value = job.retry.failed(job, exc)
            if outcome != FAIL:
                if outcome == SUCCEED:  # a map chunk some of whose items have their values
                    return self._succeed(job, value)
                return self._retried(outcome)
            exc = value  # its attempts' history attached
        try:
            job.future.set_exception(exc)
        except InvalidStateError:
            return False
        with self._lock:
            self.failed += 1
            if timed_out:
                self.timed_out += 1
            if over_memory:
                self.over_memory_limit += 1
        return True

    def _retried(self, outcome: int) -> bool:
        if outcome == STALE:  # an attempt given up on already (a thread that returned late)
            return False
        assert outcome == RETRIED
        with self._lock:
            self.retried += 1
        return True

    def _succeed(self, job: Job, value: Any) -> bool:
        try:
            job.future.set_result(value)
        except InvalidStateError:
            return False
        with self._lock:
            self.done += 1
        return True

    def cancel_pending(self, job: Job) -> None:
        """Cancel a job taken out of the queue before it started."""
        future = job.future
        if future.cancelled() or future.cancel():
            # Nobody will dequeue it now: tell concurrent.futures.wait() and as_completed()
            # waiters, which only hear of a cancel when the future is "notified".
            try:
                future.set_running_or_notify_cancel()
            except RuntimeError:  # notified already
                pass
            with self._lock:
                self.cancelled += 1
            if job.retry is not None:
                job.retry.ended(job)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "submitted": self.submitted,
                "running": max(0, self.started - self.done - self.failed - self.retried),
                "done": self.done,
                "failed": self.failed,
                "cancelled": self.cancelled,
                "timed_out": self.timed_out,
                "worker_restarts": self.worker_restarts,
                "over_memory_limit": self.over_memory_limit,
                "recycled_for_memory": self.recycled_for_memory,
                "retried": self.retried,
            }

    def fail_pending(self, job: Job, exc: BaseException) -> None:
        """Fail a job that never started (the pool broke or was terminated)."""
        if job.future.set_running_or_notify_cancel():
            with self._lock:
                self.started += 1
            self.fail(job, exc)
        else:
            with self._lock:
                self.cancelled += 1
            if job.retry is not None:
                job.retry.ended(job)


class JobQueue:
    """The jobs waiting for a worker; the one home of backpressure.

    With ``max_pending`` set, ``put`` blocks (or raises :class:`QueueFull`) while that many jobs
    wait. A slot frees when a worker takes the job, or at once when a waiting job is cancelled.
    ``None`` in the queue tells thread workers to exit.

    Jobs come out first-come, first-served, until a job with a priority arrives: from then on,
    higher priority first, first-come within one priority (see ``_priority``).
    """

    def __init__(self, max_pending: Optional[int]) -> None:
        self._queue: queue.SimpleQueue[Optional[Job]] = queue.SimpleQueue()
        # Set, for good, by the first job with a priority other than 0 (see _priority).
        self._ranked: Optional[RankedQueue[Job]] = None
        self._switch_lock = threading.Lock()
        self.max_pending = max_pending
        self._slots = threading.Semaphore(max_pending) if max_pending else None
        self._slot_lock = threading.Lock()
        # ``None`` stop markers in the queue: not jobs, so qsize() (the pending count) skips them.
        self._stop_markers = 0
        # Jobs taken out and put back (put_back): first in line again.
        self._front: deque[Job] = deque()

    @property
    def bounded(self) -> bool:
        return self._slots is not None

    def reserve(self, job: Job, block: bool) -> None:
        """Take a queue slot for ``job``, waiting for one if ``block``."""
        if self._slots is None:
            return
        if not self._slots.acquire(block):
            raise QueueFull(
                f"{self.max_pending} jobs are already waiting (max_pending={self.max_pending}); "
                "use submit() to wait for a free slot, or raise max_pending"
            )
        job.holds_slot = True

    def release(self, job: Job) -> None:
        """Give back the job's slot (idempotent: a cancel and a dequeue may both call it)."""
        if self._slots is None:
            return
        with self._slot_lock:
            if not job.holds_slot:
                return
            job.holds_slot = False
        self._slots.release()

    def put(self, job: Optional[Job]) -> None:
        if job is not None and self._ranked is None and not job.priority:  # the usual case
            self._queue.put(job)
            if self._ranked is not None:  # the queue moved onto the heap just now
                self._ranked.take_from(self._queue)
            return
        if job is None:
            with self._slot_lock:
                self._stop_markers += 1
            if self._ranked is None:
                self._queue.put(job)
                if self._ranked is not None:
                    self._ranked.take_from(self._queue)
                return
        (self._ranked or self._rank()).put(job)

    def _rank(self) -> RankedQueue[Job]:
        """Move onto the priority heap, for good: the first job with a priority is here."""
        with self._switch_lock:
            ranked = self._ranked
            if ranked is None:
                ranked = RankedQueue()
                self._ranked = ranked
                ranked.take_from(self._queue)
                self._queue.put(SWITCHED)  # wakes a thread blocked on the FIFO (see get)
            return ranked

    def put_back(self, job: Job) -> None:
        """Return a job just taken (and not started) to the front of the line."""
        self._front.appendleft(job)

    def get(self) -> Optional[Job]:
        if self._front:
            return self._front.popleft()
        if self._ranked is None:
            item = self._queue.get()
            if item is not SWITCHED:
                return self._taken(item)
            self._queue.put(item)  # for the next thread blocked on the FIFO
        assert self._ranked is not None
        return self._taken(self._ranked.get())

    def get_nowait(self) -> Optional[Job]:
        """Next waiting job, or None if there is none."""
        if self._front:
            try:
                return self._front.popleft()
            except IndexError:  # drained meanwhile by another thread
                pass
        try:
            if self._ranked is None:
                item = self._queue.get_nowait()
                if item is not SWITCHED:
                    return self._taken(item)
                self._queue.put(item)  # moved onto the heap just now
            assert self._ranked is not None
            return self._taken(self._ranked.get_nowait())
        except queue.Empty:
            return None

    def _taken(self, job: Optional[Job]) -> Optional[Job]:
        """A job (or stop marker) just left the queue: count it out, free its slot."""
        if job is None:
            with self._slot_lock:
                self._stop_markers -= 1
        elif job.holds_slot:
            self.release(job)
        return job

    def drain(self) -> list[Job]:
        """Remove and return every waiting job."""
        jobs: list[Job] = []
        while self._front:
            try:
                jobs.append(self._front.popleft())
            except IndexError:
                break
        if self._ranked is not None:
            for ranked in self._ranked.drain():
                jobs.append(ranked)
                self._taken(ranked)
            return jobs
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return jobs
            if job is SWITCHED:  # moved onto the heap meanwhile
                self._queue.put(job)
                return jobs + self.drain()
            taken = self._taken(job)
            if taken is not None:
                jobs.append(taken)

    def qsize(self) -> int:
        if self._ranked is not None:
            return self._ranked.qsize() + len(self._front)
        return max(0, self._queue.qsize() - self._stop_markers) + len(self._front)


def serialize_job(job: Job) -> Serialized:
    """Serialize ``job`` (its function too, unless ``map`` did it already for all its chunks).

    Runs in the submitting thread, so an unserializable argument fails at ``submit`` with the
    part named ("args[0].conn"), before anything is queued.
    """
    work = job.work
    try:
        serialized = job.serialized
        if serialized is None:
            serialized = job.serialized = Serialized(dumps(work.fn, "fn"))
        if isinstance(work, Call):
            serialized.body = dumps((work.args, work.kwargs), "job")
        else:
            serialized.body = dumps((work.items, work.star), "job")
        return serialized
    except SerializationError as exc:
        # Re-locate from the whole job so the path reads "args[0].conn", not "object".
        raise explain_failure(work, "job", exc.__cause__ or exc) from exc.__cause__
