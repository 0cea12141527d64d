"""The pool classes of :mod:`jobpool.multiprocessing`: the stdlib's API over one jobpool.Pool."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from multiprocessing.context import BaseContext
from typing import Any, Callable, Optional, TypeVar, Union

from .._pool import Pool as _JobPool
from .._thread import ThreadBackend
from ._callbacks import CallbackThread
from ._checks import (
    as_args,
    check_callbacks,
    check_initializer,
    check_maxtasksperchild,
    check_processes,
)
from ._chunks import stdlib_chunksize, submit_chunks
from ._imap import IMapIterator, imap
from ._results import AsyncResult, CalledBack, MapResult, outcome

T = TypeVar("T")
S = TypeVar("S")

# The stdlib's names for a pool's states.
INIT = "INIT"
RUN = "RUN"
CLOSE = "CLOSE"
TERMINATE = "TERMINATE"


class Pool:
    """``multiprocessing.Pool``: ``processes`` worker processes running jobs for you.

    Args:
        processes: workers; ``None`` means the number of CPUs, as in the stdlib.
        initializer, initargs: ``initializer(*initargs)`` runs in each worker when it starts.
        maxtasksperchild: replace a worker after this many jobs (a chunk of a map is one job).
        context: a start method name (``"fork"``, ``"spawn"``, ``"forkserver"``) or a
            multiprocessing context. ``None`` means jobpool's default, ``"forkserver"`` on
            POSIX (never ``fork`` unless asked; ``multiprocessing.get_context()`` follows
            ``multiprocessing.set_start_method``).
        backend: ``"process"``, or ``"dask"`` to run the same code on a Dask cluster (with
            ``address=`` or ``client=``), or ``"thread"``.
        job_timeout: a time limit in seconds for each job; with it, a map's items are sent one
            by one unless ``chunksize`` is given, so the limit applies per item.
        max_pending: at most this many jobs wait in the queue; submitting more blocks.

    Raises:
        ValueError: ``processes`` < 1, a bad ``maxtasksperchild``, or an option the backend
            does not take.
        TypeError: ``initializer`` is not callable.
    """

    def __init__(
        self,
        processes: Optional[int] = None,
        initializer: Optional[Callable[..., object]] = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: Optional[int] = None,
        context: Union[str, BaseContext, None] = None,
        *,
        backend: str = "process",
        job_timeout: Optional[float] = None,
        max_pending: Optional[int] = None,
        address: Optional[str] = None,
        client: Any = None,
    ) -> None:
        self._state = INIT
        processes = check_processes(processes)
        check_initializer(initializer)
        check_maxtasksperchild(maxtasksperchild)
        for name, value in (("context", context), ("maxtasksperchild", maxtasksperchild)):
            if value is not None and backend != "process":
                raise ValueError(f"{name}= applies only to backend='process', not {backend!r}")
        if backend == "process":
            context = _start_early(context)
        jobs = _JobPool(
            processes,
            backend,
            max_pending=max_pending,
            initializer=initializer,
            initargs=tuple(initargs),
            start_method=context,
            job_timeout=job_timeout,
            max_jobs_per_worker=maxtasksperchild,
            address=address,
            client=client,
        )
        self._start(jobs, processes, job_timeout)

    def _start(self, jobs: _JobPool, processes: int, job_timeout: Optional[float]) -> None:
        jobs._intake.futures_as_arguments = False  # as the stdlib: arguments go as they are
        self._jobs = jobs
        self._processes = processes
        self._job_timeout = job_timeout
        self._callbacks = CallbackThread()
        self._state = RUN

    # --- one job ----------------------------------------------------------------------------

    def apply(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Optional[Mapping[str, Any]] = None,
    ) -> T:
        """``func(*args, **kwds)`` in a worker; waits for it and returns its result."""
        future = self._submit(func, args, kwds)
        try:
            result: T = outcome(future, None)
        except BaseException:
            future.cancel()  # interrupted while it waited: nobody will take its result
            raise
        return result

    def apply_async(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Optional[Mapping[str, Any]] = None,
        callback: Optional[Callable[[T], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
    ) -> AsyncResult[T]:
        """Start ``func(*args, **kwds)`` in a worker; ``get()`` the result later.

        ``callback(result)`` or ``error_callback(exception)`` runs in the pool's callback
        thread, one at a time, in the order jobs finish, before ``get()`` returns.
        """
        if callback is None and error_callback is None:  # the common case, kept short
            if self._state != RUN or type(args) is not tuple or kwds:
                return AsyncResult(self._submit(func, args, kwds))
            return AsyncResult(self._jobs.submit(func, *args))
        check_callbacks(callback, error_callback)
        future = self._submit(func, args, kwds)
        return CalledBack(future, self._callbacks, callback, error_callback)

    def _submit(
        self, func: Callable[..., T], args: Iterable[Any], kwds: Optional[Mapping[str, Any]]
    ) -> Future[T]:
        if self._state != RUN:
            self._check_running()
        if type(args) is not tuple:
            args = as_args(args)
        if kwds:
            return self._jobs.submit(func, *args, **kwds)
        return self._jobs.submit(func, *args)

    # --- maps that return a list ------------------------------------------------------------

    def map(
        self, func: Callable[[S], T], iterable: Iterable[S], chunksize: Optional[int] = None
    ) -> list[T]:
        """``[func(x) for x in iterable]``, in the workers; raises the first item's error.

        As in the stdlib the input is read at once and cut into about four chunks per worker
        (``chunksize`` chooses); every item runs, even after one failed. For input too large
        to hold in memory, use :meth:`imap`.
        """
        return gather(self._map_async("map", func, iterable, chunksize, False, None, None))

    def map_async(
        self,
        func: Callable[[S], T],
        iterable: Iterable[S],
        chunksize: Optional[int] = None,
        callback: Optional[Callable[[list[T]], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
    ) -> MapResult[T]:
        """:meth:`map` without waiting: ``get()`` the list later."""
        return self._map_async(
            "map_async", func, iterable, chunksize, False, callback, error_callback
        )

    def starmap(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: Optional[int] = None,
    ) -> list[T]:
        """Like :meth:`map`, with each item unpacked as the arguments: ``func(*item)``."""
        return gather(self._map_async("starmap", func, iterable, chunksize, True, None, None))

    def starmap_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: Optional[int] = None,
        callback: Optional[Callable[[list[T]], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
    ) -> MapResult[T]:
        """:meth:`starmap` without waiting: ``get()`` the list later."""
        return self._map_async(
            "starmap_async", func, iterable, chunksize, True, callback, error_callback
        )

    def _map_async(
        self,
        where: str,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: Optional[int],
        star: bool,
        callback: Optional[Callable[[Any], object]],
        error_callback: Optional[Callable[[BaseException], object]],
    ) -> MapResult[Any]:
        self._check_running()
        check_callbacks(callback, error_callback)
        items = iterable if hasattr(iterable, "__len__") else list(iterable)
        if chunksize is None and self._job_timeout is None:
            chunksize = stdlib_chunksize(len(items), self._processes)  # type: ignore[arg-type]
        chunks = submit_chunks(self._jobs, where, func, items, chunksize, star)
        return MapResult(chunks, self._callbacks, callback, error_callback)

    # --- lazy maps --------------------------------------------------------------------------

    def imap(
        self,
        func: Callable[[S], T],
        iterable: Iterable[S],
        chunksize: Optional[int] = None,
        *,
        buffersize: Optional[int] = None,
    ) -> IMapIterator[T]:
        """Results in input order, lazily: the input is read only a bounded window ahead.

        ``chunksize=None`` (the stdlib's default is 1) adapts the chunk size to how long items
        take, so tiny items travel in batches and slow ones one by one; a number fixes it. At
        most ``buffersize`` chunks are in flight (default: twice the workers; at least 16 with
        a fixed ``chunksize``). An item that raised raises when its turn comes, and the
        iteration can go on after it; ``next(timeout)`` limits the wait for one result.
        """
        self._check_running()
        return imap(self._jobs, "imap", func, iterable, chunksize, True, buffersize)

    def imap_unordered(
        self,
        func: Callable[[S], T],
        iterable: Iterable[S],
        chunksize: Optional[int] = None,
        *,
        buffersize: Optional[int] = None,
    ) -> IMapIterator[T]:
        """Like :meth:`imap`, with results in the order they finish."""
        self._check_running()
        return imap(self._jobs, "imap_unordered", func, iterable, chunksize, False, buffersize)

    # --- the pool's life --------------------------------------------------------------------

    def close(self) -> None:
        """Take no more jobs; the workers exit once the jobs already submitted are done."""
        if self._state == RUN:
            self._state = CLOSE
            self._jobs.shutdown(wait=False)
            self._callbacks.close()

    def terminate(self) -> None:
        """Stop now: jobs not started are cancelled, running ones killed (their results fail).

        Threads cannot be stopped: on a ``ThreadPool`` a running job's result fails at once and
        its thread finishes the call unobserved.
        """
        self._state = TERMINATE
        self._jobs.terminate()
        self._callbacks.close()

    def join(self) -> None:
        """Wait for the workers to exit, and the callbacks to run, after close or terminate."""
        if self._state == RUN:
            raise ValueError("Pool is still running: call close() or terminate() before join()")
        self._jobs.shutdown(wait=True)
        self._callbacks.join()

    def _check_running(self) -> None:
        if self._state != RUN:
            how = "closed" if self._state == CLOSE else "terminated"
            raise ValueError(f"Pool not running: it was {how}")

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()  # as the stdlib's: jobs still running are stopped

    def __reduce__(self) -> Any:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        cls = type(self)
        return (
            f"<{cls.__module__}.{cls.__qualname__} state={self._state} "
            f"pool_size={getattr(self, '_processes', 0)}>"
        )

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_state", None) == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)
            self._callbacks.close()  # its jobpool.Pool stops its workers when it goes too


class ThreadPool(Pool):
    """``multiprocessing.pool.ThreadPool``: the same API, running jobs on ``processes`` threads.

    Takes ``job_timeout`` and ``max_pending`` as :class:`Pool` does.
    """

    def __init__(
        self,
        processes: Optional[int] = None,
        initializer: Optional[Callable[..., object]] = None,
        initargs: Iterable[Any] = (),
        *,
        job_timeout: Optional[float] = None,
        max_pending: Optional[int] = None,
    ) -> None:
        self._state = INIT
        processes = check_processes(processes)
        check_initializer(initializer)
        jobs = _JobPool(
            processes,
            "thread",
            max_pending=max_pending,
            initializer=initializer,
            initargs=tuple(initargs),
            job_timeout=job_timeout,
        )
        backend = jobs._backend
        assert isinstance(backend, ThreadBackend)
        try:
            backend.start_all()  # as the stdlib's ThreadPool: its threads exist once it is made
        except BaseException:  # no thread to be had: the ones started end with the pool
            jobs.shutdown(wait=True)
            raise
        self._start(jobs, processes, job_timeout)


def _start_early(context: Union[str, BaseContext, None]) -> BaseContext:
    """The start method's context; with a fork server, that server started now.

    The stdlib's ``Pool`` starts its processes when it is made, so the drop-in may start what
    its workers come from: the fork server then boots (a fresh interpreter importing the
    worker's side, tens of milliseconds) while the pool is made and its first jobs are
    serialized, instead of after the first job. ``jobpool.Pool`` itself waits for the first
    job: a pool nobody uses starts no process.
    """
    from .._process._context import get_context, start_fork_server

    chosen = get_context(context)  # checks the name, as jobpool.Pool would
    if chosen.get_start_method() == "forkserver":
        start_fork_server()
    return chosen


def gather(result: MapResult[T]) -> list[T]:
    """``result.get()``; if that is interrupted, the chunks not started are cancelled."""
    try:
        return result.get()
    except BaseException:
        result._cancel()
        raise
