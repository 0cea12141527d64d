"""ProcessBackend: the parent-side face of the process backend (see the package docstring)."""

from __future__ import annotations

import threading
from concurrent.futures import Future, wait
from multiprocessing.context import BaseContext
from types import FunctionType
from typing import Any, Callable, Optional

from .._contract import BackendSetup, PreparedFunction
from .._errors import SerializationError
from .._job import Job, Serialized, serialize_job
from .._per_worker import PICKLED_ONCE, pickled_once
from .._pickling_advice import explain_failure
from .._protocol import FUNCTION_CACHE_SIZE
from .._serialization import dumps, pickle_plainly
from ._blobs import BlobTable, dumps_function
from ._by_value import ByValueCache
from ._context import start_fork_server
from ._dispatcher import Dispatcher
from ._large_data import LargeData
from ._start import WorkerSetup

# Functions that pickle by module and name, remembered with their bytes (see prepare_function).
_BY_NAME_CACHE_SIZE = 256
_BY_NAME_MAX_BYTES = 512

# Functions whose pickle is at least this large get a key, so each worker keeps its unpickled
# copy (smaller ones travel with every job and unpickle cheaply).
KEYED_FUNCTION_MIN_BYTES = 4096

# How long the first submit waits for the first workers to be forked (see notify).
FIRST_FORK_SECONDS = 30.0

# How long kill() waits for a killed worker's exit to fail its job (normally milliseconds).
KILL_SETTLE_SECONDS = 30.0


class FunctionKeys:
    """Gives each large function pickle a key, the same key for the same bytes.

    Keys follow content, not identity: a changed function (or a closure now holding other
    values) pickles differently and gets a new key, so a worker never runs a stale copy. Lookup
    compares bytes only against entries of the same length, so no hashing of large payloads.
    """

    def __init__(self, capacity: int = FUNCTION_CACHE_SIZE) -> None:
        self._by_length: dict[int, list[tuple[bytes, int]]] = {}
        self._order: list[tuple[bytes, int]] = []
        self._capacity = capacity
        self._next = 0
        self._lock = threading.Lock()

    def key(self, data: bytes, keep: bool = False) -> Optional[int]:
        """The key for ``data``; None (send it inline) if it is small, unless ``keep``."""
        if len(data) < KEYED_FUNCTION_MIN_BYTES and not keep:
            return None
        with self._lock:
            for known, key in self._by_length.get(len(data), ()):
                if known == data:
                    return key
            key = self._next
            self._next += 1
            entry = (data, key)
            self._by_length.setdefault(len(data), []).append(entry)
            self._order.append(entry)
            if len(self._order) > self._capacity:
                old = self._order.pop(0)
                siblings = self._by_length[len(old[0])]
                siblings.remove(old)
                if not siblings:
                    del self._by_length[len(old[0])]
            return key


def worker_setup(
    initializer: Optional[Callable[..., object]], initargs: tuple[Any, ...]
) -> WorkerSetup:
    """What each worker receives to run its initializer (see ``_start.WorkerSetup``).

    ``initargs`` travel with the ``Process``, as with the stdlib pools, so shared objects that
    may only be passed at process creation (``multiprocessing.Value``, ``Lock``, ``Queue``)
    work. The initializer is checked here, so one that cannot travel fails at ``Pool()``.
    """
    if initializer is not None:
        try:
            dumps(initializer, "initializer")
        except SerializationError as exc:
            raise SerializationError(
                f"the initializer must be serializable: {exc}", "initializer"
            ) from exc.__cause__
    return WorkerSetup(initializer, initargs)


class ProcessBackend:
    name = "process"
    kill_limitation = None  # the worker running the job is killed and replaced
    serializes = True  # prepare() pickles the job in the caller's thread

    def __init__(
        self,
        setup: BackendSetup,
        context: BaseContext,
        max_jobs_per_worker: Optional[int],
        large: Optional[LargeData] = None,
        max_worker_memory: Optional[int] = None,
    ) -> None:
        worker = worker_setup(setup.initializer, setup.initargs)
        self._forks = context.get_start_method() == "fork"
        # The fork server is started at the first job, before it is serialized (see
        # prepare_function): it loads while the caller works.
        self._fork_server_cold = context.get_start_method() == "forkserver"
        # Large buffers through shared memory (None: everything through the pipe).
        self._large = large
        self._functions = FunctionKeys()
        self._by_name: dict[Callable[..., Any], bytes] = {}
        self._by_value = ByValueCache()
        self._blobs = BlobTable()
        self._dispatcher = Dispatcher(
            context,
            setup.queue,
            setup.outcomes,
            setup.workers,
            worker,
            max_jobs_per_worker,
            setup.on_broken,
            large,
            max_worker_memory,
        )
        self._dispatcher.thread.start()
        # A thread waiting for a running job's result reads its worker's reply (_lending).
        self.read_reply = self._dispatcher.lender.read_reply

    def prepare(self, job: Job) -> None:
        """Serialize the job in the caller's thread, so a bad argument fails at submit.

        ``map`` serializes its function once, for every chunk, beforehand.
        """
        if job.serialized is None:
            try:
                job.serialized = Serialized(*self.prepare_function(job.work.fn))
            except SerializationError as exc:  # named from the whole call: "fn.<closure x>"
                raise explain_failure(job.work, "job", exc.__cause__ or exc) from exc.__cause__
        if self._large is None:
            serialize_job(job)
        else:
            self._large.prepare(job, job.serialized)

    def refused(self, job: Job) -> None:
        """Close the job's shared memory now (see _large_data), if it has some. A caller that
        tries again (asyncio's run) prepares it anew: with a new segment, or none."""
        serialized = job.serialized
        if serialized is not None and serialized.segment is not None:
            serialized.segment.close()
            serialized.segment = None

    def prepare_function(self, fn: Callable[..., Any]) -> PreparedFunction:
        """Serialize ``fn`` (once for a whole ``map`` call), its large values out of line.

        A function that names blobs is always keyed, so each worker keeps its unpickled copy.
        """
        if self._fork_server_cold:
            self._fork_server_cold = False
            start_fork_server()
        if type(fn) in PICKLED_ONCE:  # per_worker: the same small bytes, kept by each worker
            data = pickled_once(fn)
            return data, self._functions.key(data, keep=True), ()
        plain_function = type(fn) is FunctionType
        if plain_function:
            # Plain pickle stores a function by module and name, never by value, so those bytes
            # cannot go stale: remember them rather than pickle on every submit().
            by_name = self._by_name.get(fn)
            if by_name is not None:
                return by_name, self._functions.key(by_name), ()
            # A __main__ function or a lambda: cloudpickled by value, remembered while valid.
            # Keyed, so that each worker also keeps its unpickled copy.
            by_value = self._by_value.get(fn)  # type: ignore[arg-type]
            if by_value is not None:
                return by_value, self._functions.key(by_value, keep=True), ()
            by_name = pickle_plainly(fn, "fn")
            if by_name is not None and len(by_name) <= _BY_NAME_MAX_BYTES:
                if len(self._by_name) >= _BY_NAME_CACHE_SIZE:
                    self._by_name.clear()
                self._by_name[fn] = by_name
                return by_name, self._functions.key(by_name), ()
        fn_bytes, blobs = dumps_function(fn, self._blobs)
        if plain_function and not blobs:
            self._by_value.remember(fn, fn_bytes)  # type: ignore[arg-type]
        return fn_bytes, self._functions.key(fn_bytes, keep=bool(blobs)), blobs

    def offer(self, job: Job) -> bool:
        return self._dispatcher.offer(job)

    def notify(self) -> None:
        dispatcher = self._dispatcher
        workers = dispatcher.workers
        # The dispatcher itself queues a job whose inputs it just settled (_dependencies): its
        # loop assigns jobs (and grows the pool) next anyway, and waking itself would cost it a
        # turn. A pool that may still grow is woken too: the job may need a new worker.
        if (
            (workers.idle_count > 0 or not workers.started or workers.may_grow)
            and not dispatcher.wake_pending
            and threading.get_ident() != dispatcher.thread.ident
        ):
            dispatcher.wake()
        if (
            self._forks
            and not dispatcher.first_workers.is_set()
            and threading.current_thread() is not dispatcher.thread
        ):
            # With fork, the first workers are forked while this (submitting) thread waits,
            # not while it goes on: a fork copies whatever locks the thread holds at that
            # moment (an import, a stream it prints to), and a worker needing one would hang.
            dispatcher.first_workers.wait(FIRST_FORK_SECONDS)

    def kill(self, future: Future[Any]) -> bool:
        """Kill the worker running ``future``'s job; return once the future has failed.

        The dispatcher fails the job when it sees the worker exit, a moment after the kill;
        waiting for that here means that ``pool.kill(f)`` returning True implies ``f.done()``.
        """
        dispatcher = self._dispatcher
        killed = bool(dispatcher.call(lambda: dispatcher.kill_job(future)))
        if killed and threading.current_thread() is not dispatcher.thread:
            wait([future], timeout=KILL_SETTLE_SECONDS)
        return killed

    def worker_count(self) -> int:
        return self._dispatcher.worker_count()

    def shutdown(self, wait: bool) -> None:
        self._dispatcher.close()
        if wait and threading.current_thread() is not self._dispatcher.thread:
            self._dispatcher.thread.join()

    def terminate(self) -> None:
        self._dispatcher.terminate()
        if threading.current_thread() is not self._dispatcher.thread:
            self._dispatcher.thread.join()
