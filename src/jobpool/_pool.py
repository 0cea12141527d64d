"""Pool: one ``concurrent.futures.Executor`` over threads, processes or a Dask cluster.

The pool owns everything users see: argument checks, the lifecycle, the bounded queue, ``map``
windowing and statistics. A backend only takes jobs from the queue and resolves them, so swapping
backends is one argument and the same code gives the same results on each.
"""

from __future__ import annotations

import enum
import os
import threading
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union

from typing_extensions import ParamSpec, Self

from . import _lifecycle
from ._errors import InitializerError
from ._job import Call, Chunk, ChunkResult, Job, JobQueue, Outcomes
from ._map import as_items, windowed_map
from ._progress import ErrorCallback, ProgressArg, as_completed, make_reporter, sized_total
from ._stats import PoolStats

if TYPE_CHECKING:
    from typing_extensions import Protocol

    class Backend(Protocol):
        name: str

        def prepare(self, job: Job) -> None: ...
        def offer(self, job: Job) -> bool: ...
        def notify(self) -> None: ...
        def kill(self, future: Future[Any]) -> bool: ...
        def worker_count(self) -> int: ...
        def shutdown(self, wait: bool) -> None: ...
        def terminate(self) -> None: ...


if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator


P = ParamSpec("P")
R = TypeVar("R")

BACKENDS = ("thread", "process", "dask")
# Buffers this large go through shared memory by default: below it the pipe is as fast.
DEFAULT_SHARED_MEMORY_THRESHOLD = 1 << 20


class PoolState(enum.Enum):
    OPEN = "open"  # accepts jobs
    CLOSED = "closed"  # shutdown() was called: queued jobs finish, new ones are refused
    BROKEN = "broken"  # workers cannot start (initializer failed): every job fails


_OPEN = PoolState.OPEN  # a plain global: each submit checks it twice, and enum lookups cost


def _check_positive_int(name: str, value: object, *, allow_none: bool = True) -> Optional[int]:
    if value is None and allow_none:
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


def _check_callable(where: str, fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"{where} needs a callable as its first argument, got {fn!r}")


def default_workers(backend: str) -> int:
    cpus = os.cpu_count() or 1
    return min(32, cpus + 4) if backend == "thread" else cpus


class MapPlan:
    """What a ``map``/``amap`` call settles once, before its first chunk."""

    __slots__ = (
        "chunksize",
        "fn",
        "fn_blobs",
        "fn_bytes",
        "fn_key",
        "job_timeout",
        "reporter",
        "timeout",
        "window",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        fn_bytes: Optional[bytes],
        fn_key: Optional[int],
        fn_blobs: tuple[tuple[int, Any], ...],
        job_timeout: Optional[float],
        chunksize: Optional[int],
        window: int,
        timeout: Optional[float],
        reporter: Any,
    ) -> None:
        self.fn = fn
        self.fn_bytes = fn_bytes  # serialized once for every chunk (process and Dask backends)
        self.fn_key = fn_key
        self.fn_blobs = fn_blobs
        self.job_timeout = job_timeout
        self.chunksize = chunksize
        self.window = window
        self.timeout = timeout
        self.reporter = reporter

    def chunk_job(self, chunk: list[Any], star: bool) -> Job:
        job = Job(Chunk(self.fn, chunk, star), self.job_timeout)
        job.fn_bytes, job.fn_key, job.fn_blobs = self.fn_bytes, self.fn_key, self.fn_blobs
        return job


class Pool(Executor):
    """Run jobs on at most ``workers`` threads or processes; the rest wait in a bounded queue.

    ``Pool`` is a ``concurrent.futures.Executor``: ``submit`` returns a real
    ``concurrent.futures.Future``, usable with ``wait``, ``as_completed`` and asyncio's
    ``run_in_executor``. Switch between threads (I/O-bound work) and processes (CPU-bound work,
    free of the GIL) by changing ``backend``; lambdas, closures and bound methods work on both.

    Args:
        workers: jobs running at once. Default: ``min(32, cpus + 4)`` threads or ``cpus``
            processes. ``max_workers=`` is accepted as an alias.
        backend: ``"thread"``, ``"process"`` or ``"dask"``.
        max_pending: bound on jobs waiting in the queue. ``submit`` blocks while it is full;
            ``submit_nowait`` raises :class:`QueueFull`. ``None``: unbounded.
        initializer, initargs: run once in every worker (and every replacement) before its
            first job.
        start_method: ``"forkserver"`` (default on POSIX), ``"spawn"``, ``"fork"`` or a
            multiprocessing context; process backend only. ``mp_context=`` is an alias.
        job_timeout: default time limit in seconds for each job, counted from when it starts.
        max_jobs_per_worker: replace a worker process after this many jobs (leaky libraries).
        shared_memory_threshold: process backend: arguments and results holding buffers of at
            least this many bytes (numpy arrays, ``bytes``, ``bytearray``, ``memoryview``) travel
            through shared memory instead of the pipe. Default 1 MiB; ``None`` turns it off. See
            [Large data](usage/large-data.md).
        writable_arguments: let workers write to argument arrays that came through shared memory
            (each write copies the page it touches: the caller's data never changes). Default
            False: they are read-only, so a job that modifies its argument fails loudly instead
            of changing a copy the caller never sees.
        address, client: where the Dask backend finds its scheduler.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        workers: Optional[int] = None,
        backend: str = "thread",
        *,
        max_workers: Optional[int] = None,
        max_pending: Optional[int] = None,
        initializer: Optional[Callable[..., object]] = None,
        initargs: tuple[Any, ...] = (),
        start_method: Union[str, BaseContext, None] = None,
        mp_context: Optional[BaseContext] = None,
        job_timeout: Optional[float] = None,
        max_jobs_per_worker: Optional[int] = None,
        shared_memory_threshold: Optional[int] = DEFAULT_SHARED_MEMORY_THRESHOLD,
        writable_arguments: bool = False,
        address: Optional[str] = None,
        client: Any = None,
    ) -> None:
        self._state = PoolState.CLOSED  # until fully built: a failed __init__ leaves nothing open
        if workers is not None and max_workers is not None and workers != max_workers:
            raise TypeError(
                f"workers={workers!r} and max_workers={max_workers!r} disagree; "
                "max_workers is an alias of workers: pass only one"
            )
        if workers is None:
            workers = max_workers
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(
                f"unknown backend {backend!r}; choose one of "
                + ", ".join(repr(b) for b in BACKENDS)
            )
        workers = _check_positive_int("workers", workers)
        max_pending = _check_positive_int("max_pending", max_pending)
        max_jobs_per_worker = _check_positive_int("max_jobs_per_worker", max_jobs_per_worker)
        shared_memory_threshold = _check_positive_int(
            "shared_memory_threshold", shared_memory_threshold
        )
        if not isinstance(writable_arguments, bool):
            raise TypeError(f"writable_arguments must be True or False, not {writable_arguments!r}")
        self._job_timeout = check_timeout("job_timeout", job_timeout)
        if initializer is not None:
            _check_callable("initializer", initializer)
        if not isinstance(initargs, (tuple, list)):
            raise TypeError(f"initargs must be a tuple, not {type(initargs).__name__}")
        if start_method is not None and mp_context is not None:
            raise TypeError("start_method and mp_context are aliases: pass only one")
        start_method = start_method if start_method is not None else mp_context
        self._refuse_options_for(
            backend,
            start_method=start_method,
            max_jobs_per_worker=max_jobs_per_worker,
            address=address,
            client=client,
        )
        self._backend_name = backend
        self._workers = workers or default_workers(backend)
        self._lock = threading.Lock()
        self._broken: Optional[BaseException] = None
        self._queue = JobQueue(max_pending)
        self._outcomes = Outcomes()
        # Open before the backend starts: its workers may fail their initializer (and the
        # backend call _mark_broken) before this constructor returns.
        self._state = PoolState.OPEN
        self._backend: Backend = self._make_backend(
            backend,
            initializer=initializer,
            initargs=tuple(initargs),
            start_method=start_method,
            max_jobs_per_worker=max_jobs_per_worker,
            address=address,
            client=client,
            shared_memory=(shared_memory_threshold, writable_arguments),
        )
        _lifecycle.register(self)
        finalizer = weakref.finalize(self, self._backend.shutdown, False)
        finalizer.atexit = False

    @staticmethod
    def _refuse_options_for(backend: str, **options: Any) -> None:
        """An option the chosen backend cannot honour is an error, never silently ignored."""
        only_for = {
            "start_method": ("process",),
            "max_jobs_per_worker": ("process",),
            "address": ("dask",),
            "client": ("dask",),
        }
        for name, value in options.items():
            if value is not None and backend not in only_for[name]:
                allowed = " or ".join(repr(b) for b in only_for[name])
                raise ValueError(
                    f"{name}= applies only to backend={allowed}, not backend={backend!r}"
                )

    def _make_backend(self, backend: str, **options: Any) -> Backend:
        if backend == "thread":
            from ._thread import ThreadBackend

            return ThreadBackend(
                self._queue,
                self._outcomes,
                self._workers,
                options["initializer"],
                options["initargs"],
                _lifecycle.weak_callback(self._mark_broken),
            )
        if backend == "process":
            from ._process._backend import ProcessBackend
            from ._process._context import get_context
            from ._process._large_data import large_data

            return ProcessBackend(
                self._queue,
                self._outcomes,
                self._workers,
                get_context(options["start_method"]),
                options["initializer"],
                options["initargs"],
                options["max_jobs_per_worker"],
                _lifecycle.weak_callback(self._mark_broken),
                large_data(*options["shared_memory"]),
            )
        from ._dask_loader import load_dask_backend

        backend_type: Callable[..., Backend] = load_dask_backend()
        return backend_type(
            self._queue,
            self._outcomes,
            self._workers,
            options["initializer"],
            options["initargs"],
            _lifecycle.weak_callback(self._mark_broken),
            address=options["address"],
            client=options["client"],
        )

    # --- properties -----------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        """The most jobs that run at once."""
        return self._workers

    @property
    def backend(self) -> str:
        """``"thread"``, ``"process"`` or ``"dask"``."""
        return self._backend_name

    @property
    def max_pending(self) -> Optional[int]:
        """The bound on waiting jobs, or None."""
        return self._queue.max_pending

    def __repr__(self) -> str:
        return (
            f"<jobpool.Pool backend={self._backend_name!r} workers={self._workers} "
            f"state={self._state.value}>"
        )

    # --- submitting -----------------------------------------------------------------------------

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Schedule ``fn(*args, **kwargs)`` and return its Future.

        Blocks while ``max_pending`` jobs are waiting (backpressure). On the process backend the
        call is serialized here, so an unpicklable argument raises :class:`SerializationError`
        at once, naming the part that failed, and nothing is queued.

        Raises:
            RuntimeError: the pool was shut down.
            SerializationError: the call cannot be sent to a worker process.
            InitializerError: the pool is broken (its workers could not start).
        """
        _check_callable("submit()", fn)
        return self._enqueue(Job(Call(fn, args, kwargs), self._job_timeout), block=True)

    def submit_nowait(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Like :meth:`submit`, but raise :class:`QueueFull` instead of waiting for a slot."""
        _check_callable("submit_nowait()", fn)
        return self._enqueue(Job(Call(fn, args, kwargs), self._job_timeout), block=False)

    def options(self, *, timeout: Optional[float] = None) -> JobOptions:
        """Per-job options for the calls made through the returned view.

        ``pool.options(timeout=5).submit(fn, x)`` runs ``fn(x)`` with a 5 s limit; every
        keyword of ``submit`` itself still goes to ``fn``.
        """
        return JobOptions(self, check_timeout("timeout", timeout))

    def _enqueue(self, job: Job, block: bool) -> Future[Any]:
        if self._state is not _OPEN:
            self._refuse()
        self._backend.prepare(job)
        try:
            # Straight to an idle worker, nothing to queue. No pool lock needed: a backend that
            # is shutting down refuses, and the job falls through to the refusal below.
            if self._backend.offer(job):
                self._outcomes.count_submitted()
                return job.future
            queue = self._queue
            if queue.bounded:
                queue.reserve(job, block)

                def free_slot_if_cancelled(future: Future[Any]) -> None:
                    if future.cancelled():  # a cancelled job frees its slot now, not dequeued
                        queue.release(job)

                job.future.add_done_callback(free_slot_if_cancelled)
            with self._lock:
                if self._state is not _OPEN:
                    queue.release(job)
                    self._refuse()
                queue.put(job)
        except BaseException:
            # Refused (QueueFull, closed, interrupted): its shared memory is let go now, not
            # when the job object is collected (see _process/_large_data.py). A caller that
            # tries again (asyncio's run) prepares it again.
            if job.segment is not None:
                job.segment.close()
            raise
        self._outcomes.count_submitted()
        self._backend.notify()
        return job.future

    def _refuse(self) -> None:
        if self._state is PoolState.BROKEN:
            raise InitializerError(str(self._broken)) from self._broken
        raise RuntimeError("cannot schedule new futures after shutdown")

    def _mark_broken(self, error: BaseException) -> None:
        with self._lock:
            self._broken = error
            self._state = PoolState.BROKEN
        for job in self._queue.drain():
            self._outcomes.fail_pending(job, error)

    # --- map ------------------------------------------------------------------------------------

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        ordered: bool = True,
        buffersize: Optional[int] = None,
        progress: ProgressArg = None,
        on_result: Optional[Callable[[R], object]] = None,
        on_error: Optional[ErrorCallback] = None,
    ) -> Iterator[R]:
        """Apply ``fn`` to the items of ``iterables`` (zipped, as builtin ``map``), lazily.

        Reads its input only a bounded window ahead of what the caller has consumed, so endless
        generators work and memory stays flat. Results come in input order, or in completion
        order with ``ordered=False``. An item that raised re-raises when its turn comes.

        Args:
            timeout: seconds from this call after which a result not yet ready raises
                ``TimeoutError`` (as ``Executor.map``).
            chunksize: items sent to a worker at once; ``None`` adapts it to how long items
                take. With a job time limit in force, ``None`` means 1 and the limit is per item.
            ordered: ``False`` yields results as they complete.
            buffersize: chunks in flight at most (as Python 3.14's ``Executor.map``); default
                twice the worker count.
            progress: ``True`` shows a tqdm bar (``pip install "jobpool[progress]"``); also a
                dict of tqdm options, or an existing bar (anything with ``update(n)``).
            on_result, on_error: called with each result, or each failed item's exception, in
                the thread that iterates, once per item. With ``on_error`` a failed item is
                passed to it and left out, instead of raised.
        """
        return self._map(
            fn,
            iterables,
            False,
            timeout,
            chunksize,
            ordered,
            buffersize,
            None,
            progress=progress,
            on_result=on_result,
            on_error=on_error,
        )

    def starmap(
        self,
        fn: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        *,
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        ordered: bool = True,
        buffersize: Optional[int] = None,
        progress: ProgressArg = None,
        on_result: Optional[Callable[[R], object]] = None,
        on_error: Optional[ErrorCallback] = None,
    ) -> Iterator[R]:
        """Like :meth:`map`, but each item is a tuple of arguments: ``fn(*item)``."""
        return self._map(
            fn,
            (iterable,),
            True,
            timeout,
            chunksize,
            ordered,
            buffersize,
            None,
            progress=progress,
            on_result=on_result,
            on_error=on_error,
        )

    def _plan_map(
        self,
        where: str,
        fn: Callable[..., Any],
        iterables: tuple[Any, ...],
        timeout: Optional[float],
        chunksize: Optional[int],
        buffersize: Optional[int],
        job_timeout: Optional[float],
        progress: ProgressArg,
        on_result: Optional[Callable[[Any], object]],
        on_error: Optional[ErrorCallback],
    ) -> MapPlan:
        """Check a map call's arguments and settle what all its chunks share (map and amap)."""
        _check_callable(f"{where}()", fn)
        if not iterables:
            raise TypeError(f"{where}() needs at least one iterable")
        chunksize = _check_positive_int("chunksize", chunksize)
        buffersize = _check_positive_int("buffersize", buffersize)
        if job_timeout is None:
            job_timeout = self._job_timeout
        if job_timeout is not None and chunksize is None:
            chunksize = 1  # a time limit is per item unless the caller chose chunks
        if self._state is not PoolState.OPEN:
            self._refuse()
        prepare_function = getattr(self._backend, "prepare_function", None)
        fn_bytes, fn_key, fn_blobs = prepare_function(fn) if prepare_function else (None, None, ())
        return MapPlan(
            fn,
            fn_bytes,
            fn_key,
            fn_blobs,
            job_timeout,
            chunksize,
            buffersize or 2 * self._workers,
            None if timeout is None else float(timeout),
            make_reporter(progress, on_result, on_error, sized_total(iterables), fn),
        )

    def _map(
        self,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        star: bool,
        timeout: Optional[float],
        chunksize: Optional[int],
        ordered: bool,
        buffersize: Optional[int],
        job_timeout: Optional[float],
        *,
        progress: ProgressArg = None,
        on_result: Optional[Callable[[Any], object]] = None,
        on_error: Optional[ErrorCallback] = None,
    ) -> Iterator[Any]:
        plan = self._plan_map(
            "map", fn, iterables, timeout, chunksize, buffersize, job_timeout,
            progress, on_result, on_error,
        )  # fmt: skip
        if star:
            items: Iterator[Any] = iter(iterables[0])
        else:
            items, star = as_items(iterables)

        def submit_chunk(chunk: list[Any]) -> Future[ChunkResult]:
            return self._enqueue(plan.chunk_job(chunk, star), block=True)

        run = windowed_map if plan.reporter is None else plan.reporter.map
        return run(
            submit_chunk,
            items,
            chunksize=plan.chunksize,
            window=plan.window,
            ordered=ordered,
            timeout=plan.timeout,
        )

    # --- asyncio and progress ---------------------------------------------------------------------

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` in the pool and await its result (see :doc:`asyncio`).

        Never blocks the event loop: when ``max_pending`` jobs already wait, the coroutine waits
        for a free slot. Cancelling the awaiting task cancels the job if it has not started.
        """
        _check_callable("run()", fn)
        from ._async import run_job

        result: R = await run_job(self, Job(Call(fn, args, kwargs), self._job_timeout))
        return result

    def amap(
        self,
        fn: Callable[..., R],
        *iterables: Union[Iterable[Any], AsyncIterable[Any]],
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        ordered: bool = True,
        buffersize: Optional[int] = None,
        progress: ProgressArg = None,
        on_result: Optional[Callable[[R], object]] = None,
        on_error: Optional[ErrorCallback] = None,
    ) -> AsyncIterator[R]:
        """:meth:`map` for asyncio: ``async for r in pool.amap(fn, items)``; never blocks the loop.

        Same window, chunking and options as :meth:`map`; the input may also be an async
        iterable. Callbacks and the bar run in the event loop. See :doc:`asyncio`.
        """
        from ._async import amap

        return amap(
            self,
            fn,
            iterables,
            None,
            timeout,
            chunksize,
            ordered,
            buffersize,
            progress=progress,
            on_result=on_result,
            on_error=on_error,
        )

    def as_completed(
        self,
        fs: Iterable[Future[R]],
        timeout: Optional[float] = None,
        *,
        progress: ProgressArg = None,
        on_result: Optional[Callable[[R], object]] = None,
        on_error: Optional[ErrorCallback] = None,
    ) -> Iterator[Future[R]]:
        """``concurrent.futures.as_completed(fs, timeout)`` with a progress bar and callbacks.

        The futures may come from any executor. ``on_result`` / ``on_error`` run once per future
        (a cancelled one counts as an error), in the thread that iterates. See :doc:`progress`.
        """
        return as_completed(fs, timeout, progress=progress, on_result=on_result, on_error=on_error)

    # --- control --------------------------------------------------------------------------------

    def kill(self, future: Future[Any]) -> bool:
        """Stop a job: cancel it if it waits, stop it if it runs.

        On the process backend a running job's worker is killed and replaced, and the future
        fails with :class:`JobKilledError`. A thread cannot be stopped: the future fails at once
        and the thread runs on until the call returns, its result dropped. On the Dask backend a
        running job cannot be stopped: this raises ``NotImplementedError`` (a waiting job is
        still cancelled). Returns False if the job had already finished. When it returns True,
        the future is already done (cancelled, or failed with :class:`JobKilledError`).
        """
        if future.cancel():
            return True
        if future.done():
            return False
        return self._backend.kill(future)

    def stats(self) -> PoolStats:
        """A snapshot of job counts, the queue depth and worker restarts (cheap)."""
        counts = self._outcomes.snapshot()
        return PoolStats(
            pending=self._queue.qsize(), workers=self._backend.worker_count(), **counts
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new jobs; finish the queued ones (or cancel them); stop the workers.

        Args:
            wait: block until every worker has exited.
            cancel_futures: cancel the jobs still waiting in the queue instead of running them.
        """
        with self._lock:
            if self._state is PoolState.OPEN:
                self._state = PoolState.CLOSED
        if cancel_futures:
            for job in self._queue.drain():
                self._outcomes.cancel_pending(job)
        self._backend.shutdown(wait)
        if wait:
            _lifecycle.unregister(self)

    def terminate(self) -> None:
        """Stop now: cancel waiting jobs, stop running ones (as :meth:`kill`), stop workers."""
        with self._lock:
            if self._state is PoolState.OPEN:
                self._state = PoolState.CLOSED
        for job in self._queue.drain():
            self._outcomes.cancel_pending(job)
        self._backend.terminate()
        _lifecycle.unregister(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc_type is None:
            self.shutdown(wait=True)
        elif issubclass(exc_type, Exception):
            self.shutdown(wait=True, cancel_futures=True)
        else:  # KeyboardInterrupt, SystemExit: the caller wants out now
            self.terminate()


class JobOptions:
    """A view of a :class:`Pool` that applies per-job options (see :meth:`Pool.options`)."""

    def __init__(self, pool: Pool, timeout: Optional[float]) -> None:
        self._pool = pool
        # No override means the pool's own default, for every call made through the view.
        self._timeout = timeout if timeout is not None else pool._job_timeout

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        _check_callable("submit()", fn)
        return self._pool._enqueue(Job(Call(fn, args, kwargs), self._timeout), block=True)

    def submit_nowait(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        _check_callable("submit_nowait()", fn)
        return self._pool._enqueue(Job(Call(fn, args, kwargs), self._timeout), block=False)

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        ordered: bool = True,
        buffersize: Optional[int] = None,
        progress: ProgressArg = None,
        on_result: Optional[Callable[[R], object]] = None,
        on_error: Optional[ErrorCallback] = None,
    ) -> Iterator[R]:
        return self._pool._map(
            fn,
            iterables,
            False,
            timeout,
            chunksize,
            ordered,
            buffersize,
            self._timeout,
            progress=progress,
            on_result=on_result,
            on_error=on_error,
        )

    def starmap(
        self,
        fn: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        *,
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        ordered: bool = True,
        buffersize: Optional[int] = None,
        progress: ProgressArg = None,
        on_result: Optional[Callable[[R], object]] = None,
        on_error: Optional[ErrorCallback] = None,
    ) -> Iterator[R]:
        return self._pool._map(
            fn,
            (iterable,),
            True,
            timeout,
            chunksize,
            ordered,
            buffersize,
            self._timeout,
            progress=progress,
            on_result=on_result,
            on_error=on_error,
        )

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        _check_callable("run()", fn)
        from ._async import run_job

        result: R = await run_job(self._pool, Job(Call(fn, args, kwargs), self._timeout))
        return result

    def amap(
        self,
        fn: Callable[..., R],
        *iterables: Union[Iterable[Any], AsyncIterable[Any]],
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        ordered: bool = True,
        buffersize: Optional[int] = None,
        progress: ProgressArg = None,
        on_result: Optional[Callable[[R], object]] = None,
        on_error: Optional[ErrorCallback] = None,
    ) -> AsyncIterator[R]:
        from ._async import amap

        return amap(
            self._pool,
            fn,
            iterables,
            self._timeout,
            timeout,
            chunksize,
            ordered,
            buffersize,
            progress=progress,
            on_result=on_result,
            on_error=on_error,
        )
