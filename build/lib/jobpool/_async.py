"""asyncio front end: ``await pool.run(fn, ...)`` and ``async for r in pool.amap(fn, items)``.

Both are built on the pool's own futures and bounded queue, so limits, timeouts, crash handling
and statistics are those of ``submit`` and ``map``. Nothing here blocks the event loop:

* a job is queued with ``submit_nowait``; when ``max_pending`` jobs already wait, the blocking
  ``submit`` runs in one helper thread per pool (first come, first served) and the coroutine
  awaits it, so backpressure suspends the coroutine, never the loop;
* a job's ``concurrent.futures.Future`` is awaited through ``asyncio.wrap_future``: cancelling the
  awaiting task cancels the job if it has not started (a running job runs on; see ``Pool.kill``).

``amap`` keeps the windowing of ``map``: at most ``buffersize`` chunks in flight, input read only as
results are taken, chunk sizes that adapt to how long items take. Its input may be an ordinary
or an async iterable. Progress bars and callbacks follow the rules of ``_progress``, run in the
event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ._errors import QueueFull
from ._job import ChunkResult, Job
from ._map import ChunkSizer, as_items
from ._progress import (
    ErrorCallback,
    ProgressArg,
    Reporter,
    ResultCallback,
)

if TYPE_CHECKING:
    from ._pool import Pool

AnyIterable = Union[Iterable[Any], AsyncIterable[Any]]

_slot_waiters: weakref.WeakKeyDictionary[Pool, ThreadPoolExecutor] = weakref.WeakKeyDictionary()
_slot_waiters_lock = threading.Lock()


def _slot_waiter(pool: Pool) -> ThreadPoolExecutor:
    """The pool's helper thread that waits for queue slots on behalf of coroutines."""
    with _slot_waiters_lock:
        waiter = _slot_waiters.get(pool)
        if waiter is None:
            waiter = ThreadPoolExecutor(1, thread_name_prefix="jobpool-async-submit")
            _slot_waiters[pool] = waiter
        return waiter


def _cancel_submitted(handoff: Future[Future[Any]]) -> None:
    """The coroutine gave up while its job was being queued: cancel the job once it is."""
    if not handoff.cancelled() and handoff.exception() is None:
        handoff.result().cancel()


async def enqueue(pool: Pool, job: Job) -> Future[Any]:
    """Queue ``job`` without blocking the loop; wait for a free slot asynchronously if needed."""
    try:
        return pool._enqueue(job, block=False)
    except QueueFull:
        pass
    handoff = _slot_waiter(pool).submit(pool._enqueue, job, True)
    try:
        return await asyncio.wrap_future(handoff)
    except asyncio.CancelledError:
        # A handoff still waiting for the helper thread was cancelled with us; one already
        # blocked in submit() queues the job later, and this cancels it then.
        handoff.add_done_callback(_cancel_submitted)
        raise


async def run_job(pool: Pool, job: Job) -> Any:
    future = await enqueue(pool, job)
    return await asyncio.wrap_future(future)


# --- amap ---------------------------------------------------------------------------------------


class _Items:
    """Reads the input of ``amap`` chunk by chunk, from ordinary or async iterables."""

    def __init__(self, iterables: tuple[AnyIterable, ...]) -> None:
        self._sync: Optional[Iterator[Any]] = None
        self._async: Optional[AsyncIterator[Any]] = None
        if all(isinstance(it, Iterable) for it in iterables):
            self._sync, self.star = as_items(iterables)  # type: ignore[arg-type]
        elif len(iterables) == 1:
            self._async, self.star = aiter_of(iterables[0]), False
        else:
            self._async, self.star = _azip([aiter_of(it) for it in iterables]), True

    async def take(self, size: int) -> list[Any]:
        if self._sync is not None:
            return list(itertools.islice(self._sync, size))
        assert self._async is not None
        chunk: list[Any] = []
        while len(chunk) < size:
            try:
                chunk.append(await self._async.__anext__())
            except StopAsyncIteration:
                break
        return chunk


def aiter_of(iterable: AnyIterable) -> AsyncIterator[Any]:
    if isinstance(iterable, AsyncIterable):
        return iterable.__aiter__()
    if isinstance(iterable, Iterable):
        return _from_sync(iter(iterable))
    raise TypeError(f"amap() needs iterables or async iterables, got {iterable!r}")


async def _from_sync(iterator: Iterator[Any]) -> AsyncIterator[Any]:
    for item in iterator:
        yield item


async def _azip(iterators: list[AsyncIterator[Any]]) -> AsyncIterator[tuple[Any, ...]]:
    while True:
        row = []
        for iterator in iterators:
            try:
                row.append(await iterator.__anext__())
            except StopAsyncIteration:
                return
        yield tuple(row)


class _InFlight:
    """One submitted chunk: its pool future, the loop's view of it, and how many items it has."""

    __slots__ = ("count", "future", "waiter")

    def __init__(self, future: Future[ChunkResult], count: int) -> None:
        self.future = future
        self.waiter: asyncio.Future[ChunkResult] = asyncio.wrap_future(future)
        self.count = count

    def cancel(self) -> None:
        self.waiter.cancel()  # also cancels the job if it has not started
        self.future.cancel()
        self.settle()

    def settle(self) -> None:
        """Mark the loop's view as read, so asyncio logs no 'exception was never retrieved'."""
        if self.waiter.done() and not self.waiter.cancelled():
            self.waiter.exception()

    def outcomes(self) -> Iterator[tuple[bool, Any]]:
        """``(True, value)`` or ``(False, exception)`` per item; a chunk-wide failure fails all."""
        future = self.future
        if future.cancelled():
            raise concurrent.futures.CancelledError("the pool cancelled this amap() chunk")
        exc = future.exception()
        if exc is not None:
            for _ in range(self.count):
                yield False, exc
            return
        result = future.result()
        errors = result.errors
        for index, value in enumerate(result.values):
            if errors is not None and index in errors:
                yield False, errors[index]
            else:
                yield True, value


def amap(
    pool: Pool,
    fn: Callable[..., Any],
    iterables: tuple[AnyIterable, ...],
    job_timeout: Optional[float],
    timeout: Optional[float],
    chunksize: Optional[int],
    ordered: bool,
    buffersize: Optional[int],
    *,
    progress: ProgressArg = None,
    on_result: Optional[ResultCallback] = None,
    on_error: Optional[ErrorCallback] = None,
) -> AsyncIterator[Any]:
    """The async generator behind ``Pool.amap``; arguments are checked here, at call time."""
    plan = pool._plan_map(
        "amap", fn, iterables, timeout, chunksize, buffersize, job_timeout,
        progress, on_result, on_error,
    )  # fmt: skip
    items = _Items(iterables)

    async def submit(chunk: list[Any]) -> _InFlight:
        return _InFlight(await enqueue(pool, plan.chunk_job(chunk, items.star)), len(chunk))

    return _generate(
        submit, items, ChunkSizer(plan.chunksize), plan.window, ordered, plan.timeout, plan.reporter
    )


async def _generate(
    submit: Callable[[list[Any]], Awaitable[_InFlight]],
    items: _Items,
    sizer: ChunkSizer,
    window: int,
    ordered: bool,
    timeout: Optional[float],
    reporter: Optional[Reporter],
) -> AsyncIterator[Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    in_flight: deque[_InFlight] = deque()
    exhausted = False

    async def refill() -> None:
        nonlocal exhausted
        while not exhausted and len(in_flight) < window:
            chunk = await items.take(sizer.size)
            if not chunk:
                exhausted = True
                return
            sizer.weigh(chunk)
            in_flight.append(await submit(chunk))

    try:
        await refill()
        while in_flight:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if ordered:
                head = in_flight[0]
                done_set, _ = await asyncio.wait({head.waiter}, timeout=remaining)
                done = [head] if done_set else []
            else:
                done_set, _ = await asyncio.wait(
                    {chunk.waiter for chunk in in_flight},
                    timeout=remaining,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                done = [chunk for chunk in in_flight if chunk.waiter in done_set]
            if not done:
                raise asyncio.TimeoutError("amap() results were not ready within its timeout")
            for chunk in done:
                in_flight.remove(chunk)
                chunk.settle()
                if not chunk.future.cancelled() and chunk.future.exception() is None:
                    sizer.observe(chunk.count, chunk.future.result().elapsed)
            await refill()
            for chunk in done:
                for ok, value in chunk.outcomes():
                    if ok:
                        if reporter is not None:
                            reporter.result(value)
                        yield value
                    elif reporter is None or not reporter.error(value):
                        raise value
    finally:
        for chunk in in_flight:
            chunk.cancel()
        if reporter is not None:
            reporter.close()
