"""Futures as arguments: a job whose arguments hold futures waits here until they are done.

    submit(f, fut_a, key=fut_b)
      Intake.enqueue: find_inputs(work)       None (no future): the usual path, unchanged
        --> Dependencies.accept: the job waits, on no worker and in no queue
      (what counts as an input, and what looking costs: _arguments)
      each input done --> its callback, in the thread that resolved it:
        failed, cancelled or killed --> the job fails with DependencyError, never runs
        the last one done --> the arguments get the values --> admitted: prepare, offer or queue

**Queue slots and deadlock.** A job that waits only for futures of jobpool's own pools holds a
slot of the bounded queue (``max_pending``) from ``submit`` on, like any job, so a producer that
submits faster than the pool runs is held back there, and memory stays bounded. That cannot
deadlock: a pool's futures resolve without the caller's help, and the oldest job waiting in any
pool has inputs that are older still, so it runs (every job in the queue has its inputs done).
A future that jobpool did not make (the caller's own, another executor's), or a pool's job that
waits for one, may be resolved only by the very thread that a full queue would block: a job
waiting for such a one takes no slot and never makes ``submit`` wait. When its inputs are done
it joins the queue without a slot, rather than block the thread that resolved them.

**Where the job is admitted.** The callback of the last input runs in the thread that resolved
it: a pool's worker thread or dispatcher thread, another pool's, or the caller's. It must not
block and must not copy large data there (the process dispatcher never pickles a large buffer),
so it admits the job itself only when the backend serializes nothing (threads) or the job is
small (its arguments plain and the values it received small); any other job is prepared in the
pool's one ``jobpool-inputs`` thread, made on first need.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from ._arguments import (
    SMALL_BYTES,
    Found,
    describe_path,
    first_failure,
    is_done,
    outcome,
    put_values,
    small_value,
)
from ._errors import DependencyError, SerializationError
from ._job import Call, Chunk, ChunkResult, Job, JobFuture, JobQueue, Outcomes, Serialized
from ._pickling_advice import explain_failure
from ._placeholders import dump_arguments

if TYPE_CHECKING:
    from ._contract import Backend


class Intake(Protocol):
    """What the waiting jobs need of the pool's intake (``_intake.Intake``, which owns them)."""

    backend: Backend
    queue: JobQueue
    outcomes: Outcomes

    def enqueue(self, job: Job, block: bool, look_for_futures: bool = True) -> Future[Any]: ...

    def take_slot(self, job: Job, block: bool) -> None: ...

    def accepting(self) -> bool: ...

    def refuse(self) -> None: ...

    def admit(self, job: Job, prepared: bool = False) -> None: ...


_log = logging.getLogger("jobpool")


class _Waiting:
    """One job waiting for its inputs; released exactly once (ready, failed or cancelled).

    On Dask, ``native`` are the inputs that are this pool's own jobs, whose results the cluster
    keeps for this job; ``kept`` their Dask futures once released (see _dask._inputs).
    """

    __slots__ = ("found", "hook", "job", "kept", "left", "lock", "native", "released")

    def __init__(self, job: Job, found: Found, left: int) -> None:
        self.job = job
        self.found = found
        self.left = left
        self.lock = threading.Lock()
        self.released = False
        # What the inputs' callbacks hold: emptied when the job stops waiting, so that an input
        # future does not keep the job (which holds that future) alive in a cycle.
        self.hook = _Hook(self)
        self.native: Sequence[Future[Any]] = ()
        self.kept: Optional[dict[int, tuple[Any, str]]] = None  # None: arguments not prepared


class _Hook:
    __slots__ = ("record",)

    def __init__(self, record: Optional[_Waiting]) -> None:
        self.record = record


class Dependencies:
    """The jobs of one pool that wait for the futures among their arguments (see module doc).

    A job is *unsettled* from ``accept`` until it is in the queue (or handed to a worker), or
    has failed or been cancelled; ``shutdown`` stops the backend only once none is, so that a
    job accepted before it still runs.
    """

    def __init__(self, intake: Intake) -> None:
        self._intake = intake
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # notified when none is unsettled
        self._waiting: set[_Waiting] = set()  # waiting for inputs (cancel_all, fail_all)
        self._unsettled = 0
        self._feeder: Optional[ThreadPoolExecutor] = None
        self._closed = False
        self._when_settled: list[Callable[[], None]] = []
        # The pool, held while jobs are unsettled: a pool dropped without shutdown() would
        # otherwise stop its workers (its finalizer) before the jobs it accepted could run.
        self.pool: Optional[weakref.ReferenceType[Any]] = None
        self._pool_held: Any = None
        backend = intake.backend
        self._serializes: bool = getattr(backend, "serializes", True)
        # Dask: where the results kept on the cluster for other jobs are (see _dask._inputs).
        self._cluster: Any = getattr(backend, "cluster_inputs", None)

    def count(self) -> int:
        """Jobs waiting for their inputs now (``PoolStats.waiting``)."""
        return len(self._waiting)

    # --- accepting a job -----------------------------------------------------------------------

    def accept(self, job: Job, found: Found, block: bool) -> Future[Any]:
        """Take ``job`` in; it runs once its inputs are done. Called by ``Intake.enqueue``."""
        intake = self._intake
        call = type(job.work) is Call
        inputs = found.futures()
        pending = [f for f in inputs if not is_done(f)]
        failed = first_failure(found) if call and len(pending) < len(inputs) else None
        failures = None
        if failed is None and not pending:  # every input is done: the usual path, here
            failures = put_values(job, found)
            if failures is None:
                return intake.enqueue(job, block, look_for_futures=False)
        record = _Waiting(job, found, len(pending))
        backend = intake.backend
        cluster = self._cluster if call else None
        if cluster is not None and failed is None and pending:
            # Dask: the arguments travel now, each future a placeholder (an argument that
            # cannot be pickled fails here); this pool's own inputs stay on the cluster.
            cluster.prepare(job, found.futures())
            record.kept = {}
            record.native = [f for f in pending if getattr(f, "_owner", None) is intake]
        elif failed is None and pending and self._serializes:
            _check_arguments(job, found, backend)
        outside = False  # waits for a future no pool of jobpool resolves on its own
        for future in pending:
            if not isinstance(future, JobFuture) or future._waits_outside:
                outside = True
                break
        if outside:
            job.future._waits_outside = True
        elif intake.queue.bounded and failed is None:  # only jobpool's futures: take a slot
            intake.take_slot(job, block)
        waits = failed is None and bool(pending)
        if waits:  # before the job can be found (cancel_all): a cancel always finds it
            job.future._on_cancel = functools.partial(self._cancelled, record)
        with self._lock:
            if not intake.accepting():
                job.future._on_cancel = None
                intake.queue.release(job)
                intake.refuse()
            self._unsettled += 1
            if self._unsettled == 1 and self.pool is not None:
                self._pool_held = self.pool()
            if waits:
                self._waiting.add(record)
        job.future._owner = intake
        intake.outcomes.count_submitted()
        if record.native:
            assert cluster is not None
            for future in record.native:
                cluster.want(future)
        if failed is not None:  # a call whose input failed already fails at once
            record.released = True
            self._fail(job, DependencyError.of_input(*failed))
        elif not pending:  # a chunk some of whose items' inputs failed
            record.released = True
            try:
                self._admit_part(job, failures or {})
            except BaseException as exc:  # its other items cannot travel, say
                self._fail(job, exc)
            else:
                self._settle()
        else:
            for future in pending:
                future.add_done_callback(functools.partial(self._input_done, record.hook))
        return job.future

    # --- callbacks, in whatever thread resolved the future -------------------------------------

    def _input_done(self, hook: _Hook, future: Future[Any]) -> None:
        record = hook.record
        if record is None:  # it stopped waiting already
            return
        job = record.job
        try:
            ok, error = outcome(future)
            with record.lock:
                if record.released:
                    return
                record.left -= 1
                failed = not ok and type(job.work) is Call
                if record.left and not failed:
                    return
            if not self._release(record):
                return
            if failed:
                path = next(p for _, p, f in record.found.places if f is future)
                self._fail(job, DependencyError.of_input(describe_path(path), error))
            else:
                self._ready(record)
        except BaseException as exc:  # never into concurrent.futures' callback logger
            _log.exception("jobpool: a job waiting for its inputs could not be admitted")
            self._fail(job, exc)

    def _cancelled(self, record: _Waiting) -> None:
        """The job's future was cancelled (or killed) while the job waits for its inputs."""
        job = record.job
        self._intake.queue.release(job)  # at once, as for a queued job
        if self._release(record):
            self._intake.outcomes.cancel_pending(job)
            self._settle()

    def _release(self, record: _Waiting) -> bool:
        """Mark ``record`` no longer waiting; False if something else did first. The job's
        future lets go of it (no cycle through the future to collect later)."""
        with record.lock:
            if record.released:
                return False
            record.released = True
            record.hook.record = None
        record.job.future._on_cancel = None
        with self._lock:
            self._waiting.discard(record)
        if record.native:  # done waiting: the cluster need not keep them for this job
            cluster = self._intake.backend.cluster_inputs  # type: ignore[attr-defined]
            for future in record.native:
                entry = cluster.take(future)
                if entry is not None and record.kept is not None:
                    record.kept[id(future)] = entry
        return True

    def _settle(self) -> None:
        """One job is settled; once none is left: let go of the pool, and run what waited for
        that (``shutdown``)."""
        with self._lock:
            self._unsettled -= 1
            if self._unsettled:
                return
            self._pool_held = None
            self._settled.notify_all()
            then, self._when_settled = self._when_settled, []
            feeder = self._feeder if self._closed else None
            if feeder is not None:
                self._feeder = None
        if feeder is not None:
            feeder.shutdown(wait=False)
        for call in then:
            call()

    def _fail(self, job: Job, error: BaseException) -> None:
        self._intake.queue.release(job)
        self._intake.outcomes.fail_pending(job, error)
        self._settle()

    # --- admitting a job whose inputs are done -------------------------------------------------

    def _ready(self, record: _Waiting) -> None:
        """Admit the job here if that is cheap (see the module doc), else in the feeder."""
        found, kept = record.found, record.kept
        small = True
        if kept is not None:  # arguments pickled at submit: only the values not kept are left
            for future in found.futures():
                if id(future) not in kept and not small_value(future):
                    small = False
                    break
        elif self._serializes:
            small = found.small
            for future in found.futures():
                if not small:
                    break
                small = small_value(future)
        if small:
            self._admit(record)
            return
        try:
            self._feeder_pool().submit(self._admit, record)
        except RuntimeError:  # cannot start a thread: the interpreter is exiting
            self._fail(record.job, RuntimeError("the pool's inputs thread could not start"))

    def _feeder_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._feeder is None:
                self._feeder = ThreadPoolExecutor(1, thread_name_prefix="jobpool-inputs")
            return self._feeder

    def _admit(self, record: _Waiting) -> None:
        job = record.job
        try:
            if record.kept is not None:  # Dask: the values go along as the task's inputs
                assert job.serialized is not None  # prepared at accept
                job.serialized.inputs = self._cluster.inputs_for(
                    record.found.futures(), record.kept
                )
                self._intake.admit(job, prepared=True)
            else:
                failures = put_values(job, record.found)
                if failures is not None:
                    self._admit_part(job, failures)
                else:
                    self._intake.admit(job)
        except BaseException as exc:
            self._fail(job, exc)
            return
        self._settle()

    def _admit_part(self, job: Job, failures: dict[int, BaseException]) -> None:
        """A chunk some of whose items' inputs failed: the others run as a chunk of their own;
        ``job``'s future gets every item's outcome, the failed ones in their places."""
        intake = self._intake
        assert isinstance(job.work, Chunk)
        total = len(job.work.items) + len(failures)
        kept = [index for index in range(total) if index not in failures]
        if not kept:
            intake.queue.release(job)
            if intake.outcomes.start(job):
                intake.outcomes.succeed(job, ChunkResult([None] * total, failures, 0.0))
            return
        part = Job(job.work, job.timeout, job.priority)
        if job.serialized is not None:  # its function, serialized once for the whole map
            serialized = job.serialized
            part.serialized = Serialized(
                serialized.fn_bytes, serialized.fn_key, serialized.fn_blobs
            )
        part.holds_slot, job.holds_slot = job.holds_slot, False
        if job.retry is not None:  # its retries go on as the part's
            job.retry.moved_to(job, part)

        def merge(done: Future[Any]) -> None:
            job.future._on_cancel = None
            if not job.future.set_running_or_notify_cancel():
                return
            if done.cancelled():
                job.future.set_exception(CancelledError("this map chunk was cancelled"))
                return
            error = done.exception()
            if error is not None:
                job.future.set_exception(error)
                return
            ran: ChunkResult = done.result()
            values: list[Any] = [None] * total
            errors: dict[int, BaseException] = dict(failures)
            for position, (ok, value) in zip(kept, ran.outcomes()):
                if ok:
                    values[position] = value
                else:
                    errors[position] = value
            job.future.set_result(ChunkResult(values, errors, ran.elapsed))

        job.future._on_cancel = functools.partial(_cancel, part.future)
        part.future.add_done_callback(merge)
        try:
            intake.admit(part)
        except BaseException:
            job.future._on_cancel = None
            intake.queue.release(part)  # the slot it took over from the job
            raise

    # --- the pool closing ----------------------------------------------------------------------

    def cancel_all(self) -> None:
        """Cancel every job still waiting for its inputs (``shutdown(cancel_futures=True)``)."""
        for record in list(self._waiting):
            record.job.future.cancel()  # its hook releases it

    def fail_all(self, error: BaseException) -> None:
        """Fail every job still waiting (the pool broke)."""
        for record in list(self._waiting):
            if self._release(record):
                self._fail(record.job, error)

    def close(self) -> None:
        """The pool takes no new jobs: the feeder thread ends once none is unsettled."""
        with self._lock:
            self._closed = True
            feeder = self._feeder if not self._unsettled else None
            if feeder is not None:
                self._feeder = None
        if feeder is not None:
            feeder.shutdown(wait=False)

    def when_settled(self, call: Callable[[], None]) -> None:
        """Run ``call`` once no job is unsettled (now, if none is)."""
        with self._lock:
            if self._unsettled:
                self._when_settled.append(call)
                return
        call()

    def wait_settled(self) -> None:
        """Block until no job is unsettled."""
        with self._lock:
            self._settled.wait_for(lambda: not self._unsettled)


def _check_arguments(job: Job, found: Found, backend: Any) -> None:
    """Pickle the job's function and arguments (its futures as placeholders) now, so that one
    that cannot travel fails at ``submit``, as for any job; the arguments are pickled again
    with the values later, so only their size is kept (``found.small``)."""
    if job.serialized is None:
        try:
            job.serialized = Serialized(*backend.prepare_function(job.work.fn))
        except SerializationError as exc:  # named from the whole call: "fn.<closure x>"
            raise explain_failure(job.work, "job", exc.__cause__ or exc) from exc.__cause__
    if found.plain:  # numbers and strings only: they pickle, and found.small says the size
        return
    if len(dump_arguments(job.work, found.futures())) > SMALL_BYTES:
        found.small = False


def _cancel(future: Future[Any]) -> None:
    future.cancel()
