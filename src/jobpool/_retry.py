"""Retries: a failed job runs again, up to ``retries`` more times, after a delay that grows.

    a job's attempt fails (it raised, its worker crashed, it ran past its limit) --> Outcomes.fail
      job.retry is None: resolved as before (one attribute read: jobs without retries pay that)
      job.retry is the pool's FirstAttempts (a call in its first attempt): its Attempts made now
      job.retry.failed(): STALE (an attempt given up on already: a thread that returned late),
        FAIL (the last one: the exception carries every attempt's), or
        RETRIED: the future goes back to PENDING, and a new Job (the same work, limit, priority
        and bytes, the same future) waits in the pool's Retries timer, on no worker and in no
        queue slot --> at its time, Intake.admit: into the queue with its priority
    a map chunk whose items raised (Outcomes.succeed with a ChunkResult holding errors): only
    those items run again, as a chunk of their own; the outcomes are merged into one ChunkResult.

**One owner.** What a job's attempts were (how many, what each raised, which map items are still
to run) is its :class:`Attempts`, changed under its lock by the outcome of its current attempt
and by its timer; the jobs waiting for their delay, and the jobs that may still retry
(``shutdown`` waits for them to end before it stops the workers), are the pool's
:class:`Retries`. That ``Pool.kill`` wants no more retries is a mark on the job's future, read by
every decision. ``Outcomes`` asks and counts; it decides nothing.

**A call pays for its record only when it fails.** Most jobs succeed at their first attempt, and
an :class:`Attempts` (a lock and ten fields) cost each ~1 us, a quarter of a thread pool's whole
per-job cost. So a call (``submit``, ``run``) in its first attempt has none: its ``job.retry``
is the pool's :class:`FirstAttempts` for its policy, shared by all such jobs, and the job itself
is the member of the ``Retries`` set. Which outcome of that attempt counts (a time limit and a
result can race) is decided by taking the job out of the set (``set.remove``: one step under the
GIL, so exactly one caller succeeds); a failure that may be retried makes the Attempts then.
A map chunk, whose items' outcomes are merged across attempts, has its Attempts from the start.

**What is retried** (the policy, ``_retry_policy``): every ``Exception`` by default, jobpool's
``WorkerCrashedError`` and ``JobTimeoutError`` included, as Dask's ``retries=`` and tenacity do;
never what means "stop" or cannot change: a ``BaseException`` that is not an ``Exception``
(``KeyboardInterrupt``, ``SystemExit``), cancellation, ``Pool.kill()`` (``JobKilledError``), an
input that failed (``DependencyError``), a pool that broke or is shutting down
(``BrokenExecutor``), and bytes that did not travel (``SerializationError``).
"""

from __future__ import annotations

import functools
import random
import threading
import weakref
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any, Callable, Optional

from ._deadlines import DeadlineTimer
from ._retry_policy import RetryPolicy

# The jobs, their chunk results and the pool's Outcomes are _job's, which imports this module:
# they are typed Any here (an import back would be a circle).
Job = Any
ChunkResult = Any
Outcomes = Any

#: The exceptions kept of a job's attempts: the first KEPT and the last KEPT (a job retried
#: a million times must not hold a million exceptions and their tracebacks).
KEPT = 10

# What an attempt's outcome does to its job (Attempts.failed / succeeded).
STALE = 0  # an attempt already given up on: drop it
RETRIED = 1  # the job waits for its next attempt
FAIL = 2  # the job fails with the exception returned
SUCCEED = 3  # the job succeeds with the value returned


# --- one job's attempts ------------------------------------------------------------------------


class _History:
    """What one job (or one map item) raised in the attempts that were retried: the first and
    the last ``KEPT`` of them, and how many there were."""

    __slots__ = ("count", "first", "last")

    def __init__(self) -> None:
        self.count = 0
        self.first: list[tuple[int, BaseException, float]] = []
        self.last: deque[tuple[int, BaseException, float]] = deque(maxlen=KEPT)

    def add(self, attempt: int, exc: BaseException, delay: float) -> None:
        self.count += 1
        entry = (attempt, exc, delay)
        if len(self.first) < KEPT:
            self.first.append(entry)
        else:
            self.last.append(entry)


def _decorate(
    exc: BaseException, history: Optional[_History], attempt: int, why: str
) -> BaseException:
    """Give the final exception the ones before it: ``exc.jobpool_attempts`` (on every Python:
    the kept earlier exceptions, then ``exc``) and, on 3.11+, one note per attempt."""
    if getattr(exc, "jobpool_attempts", None) is not None:
        return exc  # one exception object failed several map items: decorated once
    entries = [] if history is None else [*history.first, *history.last]
    try:
        exc.jobpool_attempts = (*(e for _, e, _ in entries), exc)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # an exception type that takes no attributes
        pass
    add_note = getattr(exc, "add_note", None)
    if add_note is None or (not entries and not why.startswith(("the retry_on", "not retried"))):
        return exc  # a failure retry_on does not retry, on its first attempt: nothing to add
    notes = []
    kept_first = 0 if history is None else len(history.first)
    left_out = 0 if history is None else history.count - len(entries)
    for i, (number, earlier, delay) in enumerate(entries):
        if left_out and i == kept_first:
            notes.append(f"jobpool: ... {left_out} more attempts, not kept ...")
        text = f"{type(earlier).__name__}: {earlier}" if earlier is not exc else "this"
        notes.append(f"jobpool: attempt {number} raised {text}; retried after {delay:.3g} s")
    notes.append(f"jobpool: attempt {attempt} raised this; {why}")
    try:
        for note in notes:
            add_note(note)
    except (TypeError, AttributeError):  # pragma: no cover - an odd exception type
        pass
    return exc


class _ChunkAttempts:
    """A map chunk's items across attempts: their values, their final errors, and which of
    them the current attempt runs (positions in the chunk as first submitted)."""

    __slots__ = ("elapsed", "errors", "histories", "items", "running", "shared", "stored", "values")

    def __init__(self, items: list[Any], first: Optional[ChunkResult]) -> None:
        self.items = items
        self.values: list[Any] = [None] * len(items) if first is None else list(first.values)
        self.errors: dict[int, BaseException] = {}
        # Each item's history; a chunk that failed whole at first shares one among its items
        # until an item's own attempts part from it.
        self.histories: dict[int, _History] = {}
        self.shared: Optional[_History] = None
        self.running = list(range(len(items)))
        self.stored = False  # some item has its value (so a whole failure fails only the rest)
        self.elapsed = 0.0 if first is None else first.elapsed

    def own_history(self, index: int) -> _History:
        """Item ``index``'s own history (a copy of the shared one, if it had that)."""
        shared = self.histories.get(index)
        history = _History()
        if shared is not None:
            history.count = shared.count
            history.first = list(shared.first)
            history.last = deque(shared.last, maxlen=KEPT)
        self.histories[index] = history
        return history

    def result(self, work: Any) -> ChunkResult:
        """The merged outcome: a ChunkResult (``Chunk.result_type``)."""
        return work.result_type(self.values, self.errors or None, self.elapsed)


class Attempts:
    """One job's attempts: the current one, and what the earlier ones raised (see module doc).

    Changed under its own lock (the pool's would be taken by every worker at every job's end);
    what it asks of the pool's ``Retries`` is taken after it, never before.
    """

    __slots__ = (
        "chunk",
        "history",
        "is_chunk",
        "job",
        "lock",
        "number",
        "policy",
        "pool_retries",
        "tracked",
        "waiting",
    )

    def __init__(self, policy: RetryPolicy, pool_retries: Retries, job: Job, chunk: bool) -> None:
        self.policy = policy
        self.is_chunk = chunk  # a map chunk: its value is a ChunkResult
        self.pool_retries = pool_retries
        self.job: Optional[Job] = job  # the current attempt (None once over): others are stale
        self.number = 1  # the current attempt's number
        self.lock = threading.Lock()
        self.history: Optional[_History] = None
        self.chunk: Optional[_ChunkAttempts] = None
        self.tracked = False  # counted among the pool's jobs that may retry (by Intake.enqueue)
        self.waiting = False  # in the timer, for its next attempt

    def is_tracked(self, job: Job) -> bool:
        return self.tracked

    def track(self, job: Job) -> None:
        """Count the job among those that may retry (``Intake.enqueue``)."""
        self.tracked = True
        self.pool_retries.track(self)

    def untrack(self, job: Job) -> None:
        """It was refused after all (``track`` came first, so no retry is ever missed)."""
        self.tracked = False
        self.pool_retries.end(self)

    def stop(self) -> None:
        """``Pool.kill`` marked the future (no more retries): wait for a decision in progress,
        so that the job is now either waiting to retry (then cancelling its future stops it)
        or will not be retried."""
        with self.lock:
            pass

    def moved_to(self, job: Job, part: Job) -> None:
        """``job``'s attempts go on as ``part``'s (a map chunk some of whose items' inputs
        failed runs the others as a job of its own, see _dependencies)."""
        with self.lock:
            if self.job is job:
                self.job = part
                part.retry = self

    def ended(self, job: Job) -> None:
        """Its future was cancelled: it may not retry any more."""
        self.pool_retries.end(self)

    # --- an attempt's outcome (from Outcomes, in whatever thread resolves it) ----------------

    def succeeded(self, job: Job, value: Any) -> tuple[int, Any]:
        if self.is_chunk:  # its items that raised may retry
            return self.settle(job, value, None)
        with self.lock:  # a call that returned: final (settle, made short for every job)
            if job is not self.job:
                return STALE, None
            self.job = None
        self.pool_retries.end(self)
        return SUCCEED, value

    def failed(self, job: Job, exc: BaseException) -> tuple[int, Any]:
        return self.settle(job, None, exc)

    def settle(self, job: Job, value: Any, exc: Optional[BaseException]) -> tuple[int, Any]:
        with self.lock:
            if job is not self.job:
                return STALE, None
            outcome = self._outcome(job, value, exc)
            if outcome[0] != RETRIED:  # final: whatever reports after this is stale (a time
                self.job = None  # limit and a result in a race, the loser reports second)
        if outcome[0] != RETRIED:
            self.pool_retries.end(self)
        return outcome

    def _outcome(self, job: Job, value: Any, exc: Optional[BaseException]) -> tuple[int, Any]:
        if self.chunk is None:
            if exc is None:
                if not self.is_chunk or not value.errors:
                    return SUCCEED, value
                self.chunk = _ChunkAttempts(job.work.items, value)
            else:
                retry, why = self._may_retry(exc)
                if not retry:
                    return FAIL, _decorate(exc, self.history, self.number, why)
                delay = self.policy.delay_before(self.number, self.pool_retries.random)
                if self.history is None:
                    self.history = _History()
                self.history.add(self.number, exc, delay)
                if not self.is_chunk:
                    return self._again(job, job.work, delay)
                # a chunk that failed whole in its first attempt: every item again
                chunk = self.chunk = _ChunkAttempts(job.work.items, None)
                chunk.shared = self.history
                for index in chunk.running:
                    chunk.histories[index] = self.history
                self.history = None
                return self._again(job, job.work, delay)
        return self._chunk_outcome(job, value, exc)

    def _may_retry(self, exc: BaseException) -> tuple[bool, str]:
        retry, why = self.policy.verdict(exc)
        if not retry:
            return False, why
        if self.number > self.policy.retries:
            return False, f"retries={self.policy.retries} used up"
        if self.job is not None and self.job.future._retries_stopped:
            return False, "not retried: Pool.kill() was called"
        if self.pool_retries.stopped:
            return False, "not retried: the pool is shutting down"
        return True, ""

    def _chunk_outcome(
        self, job: Job, result: Optional[ChunkResult], whole: Optional[BaseException]
    ) -> tuple[int, Any]:
        """The current attempt of a map chunk ended: keep the values, retry the items that may
        be (as a chunk of their own), and once none is left, the merged result."""
        chunk = self.chunk
        assert chunk is not None
        delay = self.policy.delay_before(self.number, self.pool_retries.random)
        again: list[int] = []
        errors = None if result is None else result.errors
        if result is not None:
            chunk.elapsed += result.elapsed
        for position, index in enumerate(chunk.running):
            if whole is not None:
                exc: BaseException = whole
            elif errors is None or position not in errors:
                chunk.values[index] = result.values[position]  # type: ignore[union-attr]
                chunk.stored = True
                continue
            else:
                exc = errors[position]
            retry, why = self._may_retry(exc)
            history = chunk.histories.get(index)
            if not retry:
                chunk.values[index] = None
                chunk.errors[index] = _decorate(exc, history, self.number, why)
                continue
            if history is None or history is chunk.shared:
                history = chunk.own_history(index)
            history.add(self.number, exc, delay)
            again.append(index)
        if again:
            chunk.running = again
            work = job.work
            retried = type(work)(work.fn, [chunk.items[i] for i in again], work.star)
            return self._again(job, retried, delay)
        if whole is not None and not chunk.stored:  # no item has a value: the job fails
            return FAIL, next(iter(chunk.errors.values()))
        return SUCCEED, chunk.result(job.work)

    def _again(self, job: Job, work: Any, delay: float) -> tuple[int, Any]:
        """Rewind the future and hand the next attempt to the pool's timer (under the lock)."""
        following = job.following(work)
        following.retry = self  # a call's first attempt had the pool's FirstAttempts
        future = job.future
        # While the future runs, cancel() fails: the hook is in place before it can succeed.
        future._on_cancel = functools.partial(self._cancelled, following)
        with future._condition:
            future._state = "PENDING"  # concurrent.futures' name: cancel() works again
        self.job = following
        self.number += 1
        self.waiting = True
        self.pool_retries.wait(self, following, delay, job)
        return RETRIED, None

    # --- while it waits for its next attempt -------------------------------------------------

    def _cancelled(self, job: Job) -> None:
        """Its future was cancelled (``cancel()``, ``Pool.kill()``, ``shutdown``)."""
        if self.take(job, cancelled=True):
            self.pool_retries.outcomes.cancel_pending(job)  # counted, and ended

    def take(self, job: Job, cancelled: bool = False) -> bool:
        """``job`` stops waiting (its time came, or it was cancelled): whether it still was."""
        future = job.future
        with self.lock:
            if job is not self.job or not self.waiting:
                return False  # admitted meanwhile: the queue sees it cancelled and counts it
            self.waiting = False
            self.pool_retries.left(self)
            if not cancelled:
                future._on_cancel = None
            return True


class FirstAttempts:
    """The jobs of one pool and one retry policy in their first attempt (see module doc):
    ``job.retry`` of each, with no record of their own until one fails. The pool and each of
    its views with retries make one for their calls on first need (``JobMethods``), each
    ``map`` one for its chunks (``MapPlan``).

    The job is its own member of the pool's ``Retries`` set; ``Retries.claim`` (taking it out)
    decides which outcome of its attempt counts. A failure (a chunk: some item's) makes its
    :class:`Attempts`, counted before the job leaves the set so that the set is never empty
    while it may retry.
    """

    __slots__ = ("is_chunk", "policy", "pool_retries")

    def __init__(self, policy: RetryPolicy, pool_retries: Retries, chunk: bool = False) -> None:
        self.policy = policy
        self.pool_retries = pool_retries
        self.is_chunk = chunk  # map chunks: their value is a ChunkResult

    def is_tracked(self, job: Job) -> bool:
        return job in self.pool_retries.live

    def track(self, job: Job) -> None:
        self.pool_retries.track(job)

    def untrack(self, job: Job) -> None:
        self.pool_retries.end(job)

    def ended(self, job: Job) -> None:
        self.pool_retries.end(job)

    def moved_to(self, job: Job, part: Job) -> None:
        """``job``'s first attempt goes on as ``part``'s (see ``Attempts.moved_to``)."""
        part.retry = self
        self.pool_retries.track(part)  # first: the set is never empty while it may retry
        self.pool_retries.end(job)

    def succeeded(self, job: Job, value: Any) -> tuple[int, Any]:
        if self.is_chunk and value.errors:  # some of its items may retry
            return self._first_failure(job, value, None)
        if not self.pool_retries.claim(job):
            return STALE, None  # its attempt was given up on (a time limit came first)
        return SUCCEED, value

    def failed(self, job: Job, exc: BaseException) -> tuple[int, Any]:
        return self._first_failure(job, None, exc)

    def _first_failure(
        self, job: Job, value: Optional[ChunkResult], exc: Optional[BaseException]
    ) -> tuple[int, Any]:
        retries = self.pool_retries
        attempts = Attempts(self.policy, retries, job, chunk=self.is_chunk)
        attempts.track(job)  # before the job leaves the set: shutdown never sees it empty
        if not retries.claim(job):
            attempts.untrack(job)
            return STALE, None  # its result, or another failure, came first
        # Seen by Pool.kill from now on, before its decision reads the mark (stop_retrying);
        # only the outcome that counts gets here, so no other record takes its place.
        job.future._retry = attempts
        return attempts.settle(job, value, exc)


# --- the pool's jobs that may retry ------------------------------------------------------------


class Retries:
    """One pool's retries: the jobs waiting for their next attempt (in a timer thread of their
    own, made on first need), and the jobs that may still retry: ``shutdown`` stops the workers
    only once there are none, since a job that fails after the workers stopped could not run
    again. A job stops counting when its future is resolved or cancelled, which ``Outcomes``
    tells (``Attempts.ended``) wherever that happens.

    Those jobs are a set (of Attempts, and of the jobs in their first attempt: see
    :class:`FirstAttempts`), added to and taken from without a lock (each a single call under
    the GIL): every job with retries passes here twice, from the submitting thread and a
    worker's, and a lock there was contended. The lock is taken only when the set may be empty.
    """

    def __init__(self, intake: Any, outcomes: Outcomes) -> None:
        self._intake = intake
        self.outcomes = outcomes
        self.lock = threading.Lock()  # for what follows but the set
        self._settled = threading.Condition(self.lock)
        self.live: set[Any] = set()  # Attempts, and jobs in their first attempt
        self._sleepers = 0  # threads in wait_settled (notifying none costs more than a check)
        self._waiting: dict[Attempts, Job] = {}
        self._timer: Optional[DeadlineTimer] = None
        self._when_settled: list[Callable[[], None]] = []
        self.stopped = False  # the pool is being terminated or broke: no more retries
        self.random = random.Random()
        # The pool, held while jobs may retry (as _dependencies holds it): a pool dropped
        # without shutdown() would otherwise stop its workers before they ran again.
        self.pool: Optional[weakref.ReferenceType[Any]] = None
        self._pool_held: Any = None

    # --- jobs that may retry -----------------------------------------------------------------

    def track(self, member: Any) -> None:
        """A job (its Attempts, or the job in its first attempt) is being accepted: count it
        until its future is done."""
        live = self.live
        if not live:  # the first for now: hold the pool
            with self.lock:
                if self._pool_held is None and self.pool is not None:
                    self._pool_held = self.pool()
        live.add(member)

    def end(self, member: Any) -> None:
        """``member``'s job is over (idempotent)."""
        live = self.live
        live.discard(member)
        if not live:
            self._settled_now()

    def claim(self, job: Job) -> bool:
        """Take a job in its first attempt out of the set: whether it was still there (the
        first outcome of its attempt, which counts)."""
        live = self.live
        try:
            live.remove(job)
        except KeyError:
            return False
        if not live:
            self._settled_now()
        return True

    def _settled_now(self) -> None:
        """None may retry, maybe: wake ``shutdown``, let go of the pool, run what waited."""
        with self.lock:
            if self.live:
                return
            if self._sleepers:
                self._settled.notify_all()
            calls, self._when_settled = self._when_settled, []
            held, self._pool_held = self._pool_held, None
        for call in calls:
            call()
        del held

    def count_waiting(self) -> int:
        return len(self._waiting)

    def wait_settled(self) -> None:
        """Block until no job may retry any more (``shutdown(wait=True)``)."""
        with self.lock:
            self._sleepers += 1
            try:
                while self.live:
                    self._settled.wait()
            finally:
                self._sleepers -= 1

    def when_settled(self, call: Callable[[], None]) -> None:
        """``call()`` once no job may retry: now, or in the thread that ends the last."""
        with self.lock:
            if self.live:
                self._when_settled.append(call)
                return
        call()

    # --- waiting for the next attempt --------------------------------------------------------

    def wait(self, attempts: Attempts, job: Job, delay: float, previous: Job) -> None:
        """Hold ``job`` (the next attempt after ``previous``) for ``delay`` seconds, then admit
        it. Called under ``attempts``' lock; the timer's own is taken after this one."""
        with self.lock:
            self._waiting[attempts] = job
            if self._timer is None:
                self._timer = DeadlineTimer("jobpool-retries", exit_when_idle=True)
            self._timer.add(delay, functools.partial(self._due, attempts, job, previous))

    def left(self, attempts: Attempts) -> None:
        with self.lock:
            self._waiting.pop(attempts, None)

    def _due(self, attempts: Attempts, job: Job, previous: Job) -> None:
        """In the timer thread: the delay is over, the job goes into the queue (a map chunk's
        fewer items serialized here, the previous attempt's shared memory let go first)."""
        if not attempts.take(job):
            return
        prepared = job.work is previous.work
        try:
            if not prepared:
                self._intake.backend.refused(previous)
            self._intake.admit(job, prepared=prepared)
        except BaseException as exc:  # a broken pool, or the items cannot travel again
            self.outcomes.fail_pending(job, exc)

    def _take_all(self) -> list[tuple[Attempts, Job]]:
        with self.lock:
            self.stopped = True
            return list(self._waiting.items())

    def cancel_all(self) -> None:
        """``shutdown(cancel_futures=True)``, ``terminate()``: cancel what waits to retry, and
        retry nothing from now on (a failure is then final)."""
        for _, job in self._take_all():
            job.future.cancel()  # its hook counts it

    def fail_all(self, error: BaseException) -> None:
        """The pool broke: what waits to retry fails with ``error``; nothing retries after."""
        for attempts, job in self._take_all():
            if attempts.take(job):
                self.outcomes.fail_pending(job, error)

    def close(self) -> None:
        """The pool's work is over: end the timer thread."""
        with self.lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()


def stop_retrying(futures: Iterable[Future[Any]]) -> None:
    """``Pool.kill``: these jobs are not retried any more, whatever happens to them now.

    The mark comes first and the job's Attempts is looked for after it, while a failure makes
    the Attempts first and reads the mark after it (under its lock): one of the two sees the
    other's, so a failure deciding now either sees the mark or is waited for."""
    for future in futures:
        if not hasattr(future, "_retries_stopped"):
            continue  # not a job's future
        future._retries_stopped = True
        attempts: Optional[Attempts] = getattr(future, "_retry", None)
        if attempts is not None:
            attempts.stop()
