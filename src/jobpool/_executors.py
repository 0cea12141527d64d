"""``ProcessPoolExecutor`` and ``ThreadPoolExecutor`` with the stdlib's signatures, on ``Pool``.

Code written for ``concurrent.futures`` builds its executors with the stdlib's constructor
arguments (``max_workers``, ``mp_context``, ``max_tasks_per_child``, ``thread_name_prefix``...)
and expects ``map`` to submit every item at once, as the stdlib's does: the input is read when
``map`` is called, the jobs run even if nobody takes their results, and ``shutdown`` waits for
them. These classes give exactly that over a :class:`jobpool.Pool` (they *are* pools: ``kill``,
``stats``, ``options`` and the rest work too). ``map(..., buffersize=n)`` is Python 3.14's lazy
map instead: the input is read only ``n`` jobs ahead of the results taken (``Pool.map``).

``jobpool.concurrent.futures`` exports them under the stdlib's module layout.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from multiprocessing.context import BaseContext
from typing import Any, Callable, Optional, TypeVar, Union

from ._job import ChunkResult
from ._mp_pool._chunks import submit_chunks
from ._pool import Pool
from ._thread import ThreadBackend

R = TypeVar("R")

_thread_pools = itertools.count()


def _check_max_workers(max_workers: object) -> None:
    """The stdlib's message for a count below 1 (its own tests assert it); jobpool.Pool checks
    the type."""
    if isinstance(max_workers, int) and not isinstance(max_workers, bool) and max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")


class _EagerMap(Pool):
    """``map`` as the stdlib's executors do it: every item submitted when ``map`` is called."""

    def map(  # type: ignore[override]
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
        buffersize: Optional[int] = None,
    ) -> Iterator[R]:
        """Like ``concurrent.futures.Executor.map``: ``fn`` over the zipped ``iterables``.

        Every item is read and submitted now, in chunks of ``chunksize`` items (one job each);
        the returned iterator gives the results in input order, re-raises an item's exception
        when its turn comes, and raises ``TimeoutError`` if a result is not ready ``timeout``
        seconds after this call. Closing the iterator early cancels the jobs not yet started.
        With ``buffersize`` (Python 3.14's), the map is lazy instead: the input is read only
        ``buffersize`` chunks ahead of the results taken.
        """
        if buffersize is not None:
            if isinstance(buffersize, bool) or not isinstance(buffersize, int):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
            return super().map(
                fn, *iterables, timeout=timeout, chunksize=chunksize, buffersize=buffersize
            )
        if isinstance(chunksize, int) and not isinstance(chunksize, bool) and chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end_time = None if timeout is None else timeout + time.monotonic()
        chunks = submit_chunks(self, "map", fn, zip(*iterables), chunksize, True)
        return _results(chunks, end_time)


def _results(chunks: list[Future[ChunkResult]], end_time: Optional[float]) -> Iterator[Any]:
    """The values of ``chunks`` in order; each failed item raises its exception in its turn."""
    chunks.reverse()  # popped from the end, so that the iterator holds no result it gave
    try:
        while chunks:
            if end_time is None:
                result = chunks[-1].result()
            else:
                result = chunks[-1].result(end_time - time.monotonic())
            chunks.pop()
            values, errors = result.values, result.errors
            del result
            values.reverse()
            index = 0
            while values:
                if errors and index in errors:
                    raise errors[index]
                index += 1
                yield values.pop()
    finally:
        for chunk in chunks:
            chunk.cancel()


class ThreadPoolExecutor(_EagerMap):
    """``concurrent.futures.ThreadPoolExecutor`` over ``Pool(backend="thread")``.

    Args:
        max_workers: threads; default ``min(32, cpus + 4)``, as in the stdlib.
        thread_name_prefix: the worker threads are named ``f"{prefix}_{n}"``.
        initializer, initargs: ``initializer(*initargs)`` runs in each thread first; if it
            raises, the pool is broken and every job fails with
            :class:`~jobpool.InitializerError` (a ``BrokenExecutor``), as in the stdlib.
        job_timeout, max_pending: jobpool's own, as in :class:`jobpool.Pool`.
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        thread_name_prefix: str = "",
        initializer: Optional[Callable[..., object]] = None,
        initargs: tuple[Any, ...] = (),
        *,
        job_timeout: Optional[float] = None,
        max_pending: Optional[int] = None,
    ) -> None:
        _check_max_workers(max_workers)
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        super().__init__(
            max_workers,
            "thread",
            initializer=initializer,
            initargs=initargs,
            job_timeout=job_timeout,
            max_pending=max_pending,
        )
        self._intake.futures_as_arguments = False  # the stdlib passes a Future as it is
        prefix = thread_name_prefix or f"ThreadPoolExecutor-{next(_thread_pools)}"
        if isinstance(self._backend, ThreadBackend):  # always: it was made just above
            self._backend.name_prefix = f"{prefix}_"
        self._max_workers = self.workers  # the stdlib's name, which its own tests read
        self._thread_name_prefix = prefix

    def __repr__(self) -> str:
        return _repr(self)


def default_process_workers() -> int:
    """The stdlib's default: the CPUs this process may use (``os.process_cpu_count``)."""
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return int(count or 1)


class ProcessPoolExecutor(_EagerMap):
    """``concurrent.futures.ProcessPoolExecutor`` over ``Pool(backend="process")``.

    Args:
        max_workers: worker processes; default: the CPUs this process may use.
        mp_context: a multiprocessing context or a start method name; ``None`` is jobpool's
            default, ``"forkserver"`` on POSIX (never ``fork`` unless asked).
        initializer, initargs: ``initializer(*initargs)`` runs in each worker first.
        max_tasks_per_child: replace a worker after this many jobs (any start method).
        job_timeout, max_pending: jobpool's own, as in :class:`jobpool.Pool`.
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        mp_context: Union[str, BaseContext, None] = None,
        initializer: Optional[Callable[..., object]] = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: Optional[int] = None,
        job_timeout: Optional[float] = None,
        max_pending: Optional[int] = None,
    ) -> None:
        _check_max_workers(max_workers)
        if max_tasks_per_child is not None:
            if isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        super().__init__(
            default_process_workers() if max_workers is None else max_workers,
            "process",
            start_method=mp_context,
            initializer=initializer,
            initargs=initargs,
            max_jobs_per_worker=max_tasks_per_child,
            job_timeout=job_timeout,
            max_pending=max_pending,
        )
        self._intake.futures_as_arguments = False  # as the stdlib: a Future is not picklable
        self._max_workers = self.workers  # the stdlib's name, which its own tests read

    def __repr__(self) -> str:
        return _repr(self)


def _repr(pool: Pool) -> str:
    cls = type(pool)
    return (
        f"<{cls.__module__}.{cls.__qualname__} workers={pool.workers} "
        f"state={pool._intake.state.value}>"
    )
