"""The calls that put jobs into a pool, written once for ``Pool`` and its ``JobOptions`` views.

A class that mixes in :class:`JobMethods` provides ``_intake`` (the pool's
:class:`~jobpool._intake.Intake`) and ``_job_timeout`` (the time limit its jobs get: the pool's
``job_timeout``, or a view's ``timeout``) and ``_job_memory_limit`` (the pool's
``job_memory_limit``, or a view's).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union

from typing_extensions import ParamSpec

from ._intake import check_callable
from ._job import ON_CANCEL, Call, Job, OnCancel
from ._progress import ErrorCallback, ProgressArg

if TYPE_CHECKING:
    from ._intake import Intake
    from ._retry import FirstAttempts
    from ._retry_policy import RetryPolicy

P = ParamSpec("P")
R = TypeVar("R")


def check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, not {type(priority).__name__} ({priority!r})")
    return priority


def check_on_cancel(on_cancel: object) -> OnCancel:
    if on_cancel not in ON_CANCEL:
        raise ValueError(
            f"on_cancel must be 'kill' (stop a running job when its awaiting task is cancelled) "
            f"or 'leave' (let it finish), not {on_cancel!r}"
        )
    return on_cancel  # type: ignore[return-value]


class JobMethods:
    _intake: Intake
    _job_timeout: Optional[float]
    _priority: int = 0  # higher first among waiting jobs (options(priority=))
    _on_cancel: OnCancel = "kill"  # what cancelling run()'s awaiting task does to a running job
    _job_memory_limit: Optional[int] = None  # bytes: the pool's job_memory_limit, or a view's
    _retry: Optional[RetryPolicy] = None  # retries=, retry_on=, the delays (see _retry)
    _first: Optional[FirstAttempts] = None  # what its calls carry in their first attempt

    def _first_attempts(self) -> FirstAttempts:
        """This pool's or view's ``FirstAttempts``, made on first need (two threads that make
        one each at once both work: they only differ in identity)."""
        first = self._first
        if first is None:
            assert self._retry is not None
            first = self._first = self._intake.first_attempts(self._retry)
        return first

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Schedule ``fn(*args, **kwargs)`` and return its Future.

        A future among the arguments (also inside lists, tuples, dicts and sets) is replaced by
        its result once it is done; the job waits for it on no worker, and fails with
        :class:`DependencyError` if it failed (see [Pipelines](pipelines.md)).

        Blocks while ``max_pending`` jobs are waiting (backpressure). On the process backend the
        call is serialized here, so an unpicklable argument raises :class:`SerializationError`
        at once, naming the part that failed, and nothing is queued.

        Raises:
            RuntimeError: the pool was shut down.
            SerializationError: the call cannot be sent to a worker process.
            InitializerError: the pool is broken (its workers could not start).
        """
        check_callable("submit()", fn)
        job = Job(Call(fn, args, kwargs), self._job_timeout, self._priority, self._job_memory_limit)
        if self._retry is not None:
            return self._intake.enqueue_retried(job, self._first or self._first_attempts(), True)
        return self._intake.enqueue(job, block=True)

    def submit_nowait(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Like :meth:`submit`, but raise :class:`QueueFull` instead of waiting for a slot."""
        check_callable("submit_nowait()", fn)
        job = Job(Call(fn, args, kwargs), self._job_timeout, self._priority, self._job_memory_limit)
        if self._retry is not None:
            return self._intake.enqueue_retried(job, self._first or self._first_attempts(), False)
        return self._intake.enqueue(job, block=False)

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
        plan = self._intake.plan_map(
            "map", fn, iterables, timeout=timeout, chunksize=chunksize, buffersize=buffersize,
            job_timeout=self._job_timeout, progress=progress, on_result=on_result,
            on_error=on_error, priority=self._priority, memory_limit=self._job_memory_limit,
            retry=self._retry,
        )  # fmt: skip
        return self._intake.map(plan, iterables, False, ordered)

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
        plan = self._intake.plan_map(
            "starmap", fn, (iterable,), timeout=timeout, chunksize=chunksize,
            buffersize=buffersize, job_timeout=self._job_timeout, progress=progress,
            on_result=on_result, on_error=on_error, priority=self._priority,
            memory_limit=self._job_memory_limit, retry=self._retry,
        )  # fmt: skip
        return self._intake.map(plan, (iterable,), True, ordered)

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` in the pool and await its result (see :doc:`asyncio`).

        Never blocks the event loop: when ``max_pending`` jobs already wait, the coroutine waits
        for a free slot. Cancelling the awaiting task cancels the job if it has not started, and
        stops it if it runs, as :meth:`Pool.kill` does (on the process backend, with the
        programs it started); ``options(on_cancel="leave")`` lets a running job finish.
        """
        check_callable("run()", fn)
        from ._async import run_job

        job = Job(Call(fn, args, kwargs), self._job_timeout, self._priority, self._job_memory_limit)
        if self._retry is not None:
            self._intake.with_retries(job, self._first or self._first_attempts())
        result: R = await run_job(self._intake, job, self._on_cancel)
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
        iterable. Callbacks and the bar run in the event loop. An iteration that ends early
        (closed, cancelled, an item's error) stops the chunks still running, as :meth:`run`
        does. See :doc:`asyncio`.
        """
        from ._async import amap

        plan = self._intake.plan_map(
            "amap", fn, iterables, timeout=timeout, chunksize=chunksize, buffersize=buffersize,
            job_timeout=self._job_timeout, progress=progress, on_result=on_result,
            on_error=on_error, priority=self._priority, memory_limit=self._job_memory_limit,
            retry=self._retry,
        )  # fmt: skip
        return amap(self._intake, plan, iterables, ordered, self._on_cancel)
