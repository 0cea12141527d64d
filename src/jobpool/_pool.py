"""Pool: one ``concurrent.futures.Executor`` over threads, processes or a Dask cluster.

The pool owns everything users see: argument checks, the lifecycle, the bounded queue, ``map``
windowing and statistics. A backend only takes jobs from the queue and resolves them (see
``_contract``), so swapping backends is one argument and the same code gives the same results on
each. The calls that submit jobs are shared with ``JobOptions`` (``_job_methods``); what decides
whether a job is accepted lives in the pool's ``Intake``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import Any, Callable, Optional, TypeVar, Union

from typing_extensions import Self

from . import _lifecycle
from ._backend_factory import FACTORIES, make_backend, refuse_option
from ._contract import BackendSetup
from ._intake import Intake, check_callable, check_positive_int, check_timeout
from ._job import JobQueue, OnCancel, Outcomes
from ._job_methods import JobMethods, check_on_cancel, check_priority
from ._memory_size import check_platform, parse_memory
from ._progress import ErrorCallback, ProgressArg, as_completed
from ._retry import stop_retrying
from ._retry_policy import RetryOn, RetryPolicy, make_policy
from ._stats import PoolStats

R = TypeVar("R")

# Buffers this large go through shared memory by default: below it the pipe is as fast.
DEFAULT_SHARED_MEMORY_THRESHOLD = 1 << 20


def _check_arguments(
    workers: Optional[int],
    max_workers: Optional[int],
    backend: object,
    initializer: object,
    initargs: object,
    start_method: object,
    mp_context: object,
) -> Optional[int]:
    """Refuse contradictory or mistyped arguments, naming the fix; the worker count asked for."""
    if workers is not None and max_workers is not None and workers != max_workers:
        raise TypeError(
            f"workers={workers!r} and max_workers={max_workers!r} disagree; "
            "max_workers is an alias of workers: pass only one"
        )
    if not isinstance(backend, str) or backend not in FACTORIES:
        raise ValueError(
            f"unknown backend {backend!r}; choose one of " + ", ".join(repr(b) for b in FACTORIES)
        )
    if initializer is not None:
        check_callable("initializer", initializer)
    if not isinstance(initargs, (tuple, list)):
        raise TypeError(f"initargs must be a tuple, not {type(initargs).__name__}")
    if start_method is not None and mp_context is not None:
        raise TypeError("start_method and mp_context are aliases: pass only one")
    return check_positive_int("workers", workers if workers is not None else max_workers)


def default_workers(backend: str) -> int:
    cpus = os.cpu_count() or 1
    return min(32, cpus + 4) if backend == "thread" else cpus


class Pool(JobMethods, Executor):
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
            ``submit_nowait`` raises :class:`QueueFull`. ``None``: unbounded. A job waiting for
            futures of jobpool's pools among its arguments holds a slot too; one waiting for
            any other future holds none (see [Pipelines](pipelines.md)).
        initializer, initargs: run once in every worker (and every replacement) before its
            first job.
        start_method: ``"forkserver"`` (default on POSIX), ``"spawn"``, ``"fork"`` or a
            multiprocessing context; process backend only. ``mp_context=`` is an alias.
        job_timeout: default time limit in seconds for each job, counted from when it starts.
        max_jobs_per_worker: replace a worker process after this many jobs (leaky libraries).
        job_memory_limit: process backend: the most memory a job may use, counting the
            programs it starts: bytes, or a string such as ``"2 GiB"`` or ``"500MB"``. A job
            that goes over is stopped with its programs and fails with
            :class:`MemoryLimitError`; its worker is replaced. Enforced by a memory cgroup per
            worker where one can be made, else sampled (see [Long runs](long-runs.md)).
            Refused on the thread and Dask backends.
        max_worker_memory: process backend: after a job, replace a worker whose own memory
            (private, resident: not the shared memory of large arguments and results) is above
            this (bytes or a string as above). The job's result is delivered as usual.
        shared_memory_threshold: process backend: arguments and results holding buffers of at
            least this many bytes (numpy arrays, ``bytes``, ``bytearray``, ``memoryview``) travel
            through shared memory instead of the pipe. Default 1 MiB; ``None`` turns it off. See
            [Large data](usage/large-data.md). Accepted on every backend (others copy nothing).
        writable_arguments: let workers write to argument arrays that came through shared memory
            (each write copies the page it touches: the caller's data never changes). Default
            False: they are read-only, so a job that modifies its argument fails loudly instead
            of changing a copy the caller never sees.
        address, client: where the Dask backend finds its scheduler.
        retries: run a job that failed again, up to this many more times (default 0): its own
            exception, a worker crash and a time limit are failures a retry may fix. The future
            resolves once, with the last attempt's outcome; a failure carries each attempt's
            exception (``exc.jobpool_attempts``, and notes on Python 3.11+). In a ``map`` only
            the items that raised run again. See [Long runs](long-runs.md#retries).
        retry_on: what is retried: an exception class, a tuple of them, or a predicate
            ``(exc) -> bool``. Default ``Exception``: every failure but those that mean stop
            (``Pool.kill()``, cancellation, a failed input, a pool shutting down).
        retry_delay, retry_backoff, retry_max_delay, retry_jitter: the wait before retry
            ``n`` is ``retry_delay * retry_backoff ** (n - 1)`` seconds (default 0.1 s,
            doubling), at most ``retry_max_delay`` (default 60 s), times a random factor within
            ``1 ± retry_jitter`` (default 0.5). A job waiting to retry holds no worker.

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
        job_memory_limit: Union[int, str, None] = None,
        max_worker_memory: Union[int, str, None] = None,
        shared_memory_threshold: Optional[int] = DEFAULT_SHARED_MEMORY_THRESHOLD,
        writable_arguments: bool = False,
        address: Optional[str] = None,
        client: Any = None,
        retries: int = 0,
        retry_on: Optional[RetryOn] = None,
        retry_delay: Optional[float] = None,
        retry_backoff: Optional[float] = None,
        retry_max_delay: Optional[float] = None,
        retry_jitter: Optional[float] = None,
    ) -> None:
        workers = _check_arguments(
            workers, max_workers, backend, initializer, initargs, start_method, mp_context
        )
        max_pending = check_positive_int("max_pending", max_pending)
        self._job_timeout = check_timeout("job_timeout", job_timeout)
        self._job_memory_limit = parse_memory("job_memory_limit", job_memory_limit)
        self._priority = 0  # read by every submit: an instance attribute is found first
        self._retry = make_policy(
            None, retries, retry_on, retry_delay, retry_backoff, retry_max_delay, retry_jitter
        )
        self._backend_name = backend
        self._workers = workers or default_workers(backend)
        self._queue = JobQueue(max_pending)
        self._outcomes = Outcomes()
        # Open before the backend starts: its workers may fail their initializer (and the
        # backend call mark_broken) before this constructor returns.
        self._intake = Intake(self._queue, self._outcomes, self._workers)
        setup = BackendSetup(
            self._queue,
            self._outcomes,
            self._workers,
            initializer,
            tuple(initargs),
            _lifecycle.weak_callback(self._intake.mark_broken),
        )
        if not isinstance(writable_arguments, bool):
            raise TypeError(f"writable_arguments must be True or False, not {writable_arguments!r}")
        options = {
            "start_method": start_method if start_method is not None else mp_context,
            "max_jobs_per_worker": check_positive_int("max_jobs_per_worker", max_jobs_per_worker),
            "job_memory_limit": self._job_memory_limit,
            "max_worker_memory": parse_memory("max_worker_memory", max_worker_memory),
            "address": address,
            "client": client,
            "shared_memory": (
                check_positive_int("shared_memory_threshold", shared_memory_threshold),
                writable_arguments,
            ),
        }
        self._backend = make_backend(backend, setup, options)
        self._intake.backend = self._backend
        self._intake.pool = weakref.ref(self)  # held while jobs wait for their inputs
        _lifecycle.register(self)
        finalizer = weakref.finalize(
            self, _lifecycle.shutdown_in_owner, self._backend.shutdown, self._intake.owner
        )
        finalizer.atexit = False

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
            f"state={self._intake.state.value}>"
        )

    # --- per-job options and progress -----------------------------------------------------------

    def options(
        self,
        *,
        timeout: Optional[float] = None,
        priority: int = 0,
        on_cancel: OnCancel = "kill",
        job_memory_limit: Union[int, str, None] = None,
        retries: Optional[int] = None,
        retry_on: Optional[RetryOn] = None,
        retry_delay: Optional[float] = None,
        retry_backoff: Optional[float] = None,
        retry_max_delay: Optional[float] = None,
        retry_jitter: Optional[float] = None,
    ) -> JobOptions:
        """Per-job options for the calls made through the returned view.

        ``pool.options(timeout=5).submit(fn, x)`` runs ``fn(x)`` with a 5 s limit; every
        keyword of ``submit`` itself still goes to ``fn``.

        Args:
            timeout: the jobs' time limit in seconds, counted from when each starts.
            priority: among jobs waiting for a worker, higher priority first, first come
                first served within one priority (any int; default 0). A job already handed
                to a worker keeps its place. On Dask it is also Dask's own ``priority=``. See
                [Pipelines](pipelines.md#priorities).
            on_cancel: what cancelling the asyncio task that awaits ``run`` (or iterates
                ``amap``) does to a job that already runs. ``"kill"`` (the default) stops it
                as :meth:`kill` does: on the process backend its worker is killed with every
                program the job started, and replaced. A thread cannot be stopped: its future
                fails and the call runs on in an abandoned thread. On Dask a job that has not
                started never runs; a running one runs on. ``"leave"`` lets it finish (its
                result is dropped), for jobs that must not be stopped half-way. A job that has
                not started is cancelled either way. See [asyncio](asyncio.md#cancellation).
            job_memory_limit: process backend (Linux): the jobs' memory limit (bytes, or a
                string such as ``"2 GiB"``), in place of the pool's; a ``map`` chunk is one
                job. See [Long runs](long-runs.md).
            retries, retry_on, retry_delay, retry_backoff, retry_max_delay, retry_jitter: the
                pool's retry options (see :class:`Pool`) for these jobs; each one not given is
                the pool's. ``retries=0`` turns retries off for them.
        """
        memory_limit = parse_memory("job_memory_limit", job_memory_limit)
        if memory_limit is not None:
            refuse_option("job_memory_limit", self._backend_name)
            check_platform("job_memory_limit")
        return JobOptions(
            self,
            check_timeout("timeout", timeout),
            check_priority(priority),
            check_on_cancel(on_cancel),
            memory_limit,
            make_policy(
                self._retry,
                retries,
                retry_on,
                retry_delay,
                retry_backoff,
                retry_max_delay,
                retry_jitter,
            ),
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

        On the process backend a running job's worker is killed, with every program the job
        started (see :doc:`usage/programs`), and replaced; the future fails with
        :class:`JobKilledError` once they are gone. A thread cannot be stopped: the future fails
        at once and the thread (and any program it started) runs on until the call returns, its
        result dropped. On the Dask backend a job
        waiting on a Dask worker fails with :class:`JobKilledError` and never runs, but a
        running one cannot be stopped: this raises ``NotImplementedError`` saying so. Returns
        False if the job had already finished, and for a future this pool did not make (it is
        left alone). When it returns True, the future is already done (cancelled, or failed
        with :class:`JobKilledError`). A job with retries is not retried after this: one
        waiting for its next attempt is cancelled.
        """
        if not self._intake.in_owner():
            self._intake.refuse_here()
        if getattr(future, "_owner", None) is not self._intake:
            return False  # another pool's, or the caller's own: not ours to cancel
        stop_retrying((future,))  # a job waiting to retry is then cancelled here
        if future.cancel():
            return True
        if future.done():
            return False
        if self._backend.kill(future):
            return True
        limitation = self._backend.kill_limitation
        if limitation is not None and not future.done():
            raise NotImplementedError(limitation)
        return False

    def stats(self) -> PoolStats:
        """A snapshot of job counts, the queue depth and worker restarts (cheap)."""
        if not self._intake.in_owner():
            self._intake.refuse_here()
        counts = self._outcomes.snapshot()
        return PoolStats(
            pending=self._queue.qsize(),
            workers=self._backend.worker_count(),
            waiting=self._intake.waiting_for_inputs(),
            waiting_to_retry=self._intake.waiting_to_retry(),
            **counts,
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new jobs; finish the queued ones (or cancel them); stop the workers.

        Args:
            wait: block until every worker has exited.
            cancel_futures: cancel the jobs still waiting in the queue, waiting for the
                futures among their arguments, or waiting for their next attempt, instead of
                running them; a job that fails from now on is not retried.

        Jobs waiting for the futures among their arguments were accepted: the workers stop only
        once each of them has joined the queue (or failed). So with ``wait=True`` this also
        waits for their inputs; with ``wait=False`` the workers stop later, by themselves. Jobs
        with retries likewise: the workers stop once none of them may need another attempt.

        In a child forked from the process that created the pool, this does nothing: the pool
        and its workers are the parent's.
        """
        if not self._intake.in_owner():
            return
        self._intake.close()
        if cancel_futures:
            self._intake.cancel_waiting()
        backend = self._backend
        if wait:
            self._intake.after_inputs(lambda: backend.shutdown(True), wait=True)
            _lifecycle.unregister(self)
        else:
            self._intake.after_inputs(lambda: backend.shutdown(False), wait=False)

    def terminate(self) -> None:
        """Stop now: cancel waiting jobs, stop running ones (as :meth:`kill`), stop workers.

        On the process backend each worker is killed with every program it started. In a
        child forked from the process that created the pool, this does nothing.
        """
        if not self._intake.in_owner():
            return
        self._intake.terminate()
        self._backend.terminate()
        _lifecycle.unregister(self)

    def _forked_copy(self) -> None:
        """This is a forked child's copy of the pool (see _lifecycle): refuse every call."""
        self._intake.forked()

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


class JobOptions(JobMethods):
    """A view of a :class:`Pool` that applies per-job options (see :meth:`Pool.options`).

    It has the pool's ``submit``, ``submit_nowait``, ``map``, ``starmap``, ``run`` and ``amap``;
    each job made through it gets the view's options.
    """

    def __init__(
        self,
        pool: Pool,
        timeout: Optional[float],
        priority: int = 0,
        on_cancel: OnCancel = "kill",
        memory_limit: Optional[int] = None,
        retry: Optional[RetryPolicy] = None,
    ) -> None:
        self._pool = pool
        self._retry = retry
        self._intake = pool._intake
        # No override means the pool's own default, for every call made through the view.
        self._job_timeout = timeout if timeout is not None else pool._job_timeout
        self._priority = priority
        self._on_cancel = on_cancel
        self._job_memory_limit = (
            memory_limit if memory_limit is not None else pool._job_memory_limit
        )
