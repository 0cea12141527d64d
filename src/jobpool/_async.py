"""asyncio front end: ``await pool.run(fn, ...)`` and ``async for r in pool.amap(fn, items)``.

Both are built on the pool's own futures and bounded queue, so limits, timeouts, crash handling
and statistics are those of ``submit`` and ``map``. Nothing here blocks the event loop:

* a job is queued with ``submit_nowait``; when ``max_pending`` jobs already wait, the blocking
  ``submit`` runs in the pool's one helper thread (first come, first served; made on first need
  and shut down with the pool) and the coroutine awaits it, so backpressure suspends the
  coroutine, never the loop;
* a job's ``concurrent.futures.Future`` is awaited through ``asyncio.wrap_future``: cancelling the
  awaiting task cancels the job if it has not started, and stops it if it runs, as ``Pool.kill``
  does (``options(on_cancel="kill")``, the default; ``"leave"`` lets it finish). The kill waits
  for the worker's end in a thread of its own, and the task awaits that, shielded, before its
  cancellation goes on: when the awaiting code moves on, the job and its programs are gone.

``amap`` keeps the windowing of ``map``: at most ``buffersize`` chunks in flight, input read only as
results are taken, chunk sizes that adapt to how long items take. Its input may be an ordinary
or an async iterable. Progress bars and callbacks follow the rules of ``_progress``, run in the
event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ._errors import QueueFull
from ._job import ChunkResult, Job, OnCancel, chunk_outcomes
from ._map import ChunkSizer, as_items
from ._progress import Reporter
from ._retry import stop_retrying

if TYPE_CHECKING:
    from ._intake import Intake, MapPlan

_log = logging.getLogger("jobpool")

AnyIterable = Union[Iterable[Any], AsyncIterable[Any]]


def _cancel_submitted(handoff: Future[Future[Any]]) -> None:
    """The coroutine gave up while its job was being queued: cancel the job once it is."""
    if not handoff.cancelled() and handoff.exception() is None:
        handoff.result().cancel()


async def enqueue(intake: Intake, job: Job) -> Future[Any]:
    """Queue ``job`` without blocking the loop; wait for a free slot asynchronously if needed."""
    try:
        return intake.enqueue(job, block=False)
    except QueueFull:
        pass
    handoff = intake.slot_waiter().submit(intake.enqueue, job, True)
    try:
        return await asyncio.wrap_future(handoff)
    except asyncio.CancelledError:
        # A handoff still waiting for the helper thread was cancelled with us; one already
        # blocked in submit() queues the job later, and this cancels it then.
        handoff.add_done_callback(_cancel_submitted)
        raise


async def run_job(intake: Intake, job: Job, on_cancel: OnCancel = "kill") -> Any:
    future = await enqueue(intake, job)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        # wrap_future has tried future.cancel() already: it failed only if the job runs. With
        # retries, nobody awaits another attempt: none is made (one waiting is cancelled).
        stop_retrying((future,))
        if future.cancel():
            raise
        if on_cancel == "kill" and not future.done():
            await stop_running(intake, [future])
        raise


def _kill_each(intake: Intake, futures: list[Future[Any]]) -> None:
    """Pool.kill() for each job that still runs; returns once each has failed (or cannot be
    stopped: a running Dask task)."""
    stop_retrying(futures)
    for future in futures:
        if not future.cancel() and not future.done():  # cancel: one waiting to retry
            try:
                intake.backend.kill(future)
            except Exception:  # the pool closed meanwhile: nothing left to stop
                _log.debug("stopping a cancelled job failed", exc_info=True)


async def stop_running(intake: Intake, futures: list[Future[Any]]) -> None:
    """Stop the jobs of ``futures`` that run, as ``Pool.kill`` does, without blocking the loop.

    The kill runs in a thread of its own (the process backend waits there for the worker and
    its programs to be gone). The caller is being cancelled: its wait is shielded, so a second
    cancel ends the wait early, never the kill.
    """
    stopped: Future[None] = Future()

    def kill() -> None:
        try:
            _kill_each(intake, futures)
        finally:
            stopped.set_result(None)

    threading.Thread(target=kill, name="jobpool-async-kill", daemon=True).start()
    await asyncio.shield(asyncio.wrap_future(stopped))


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
        if self.future.cancelled():
            raise concurrent.futures.CancelledError("the pool cancelled this amap() chunk")
        return chunk_outcomes(self.future, self.count)

    def observe(self, sizer: ChunkSizer) -> None:
        """Let the sizer learn from this finished chunk's time in the worker."""
        future = self.future
        if not future.cancelled() and future.exception() is None:
            sizer.observe(self.count, future.result().elapsed)


def amap(
    intake: Intake,
    plan: MapPlan,
    iterables: tuple[AnyIterable, ...],
    ordered: bool,
    on_cancel: OnCancel = "kill",
) -> AsyncIterator[Any]:
    """The async iterator behind ``Pool.amap``; ``plan`` was checked at call time."""
    items = _Items(iterables)

    async def submit(chunk: list[Any]) -> _InFlight:
        return _InFlight(await enqueue(intake, plan.chunk_job(chunk, items.star)), len(chunk))

    async def stop(futures: list[Future[Any]]) -> None:
        await stop_running(intake, futures)

    return _AsyncMap(submit, items, plan, ordered, stop if on_cancel == "kill" else None).results()


class _AsyncMap:
    """One ``amap``: at most ``window`` chunks in flight, input read as results are taken."""

    def __init__(
        self,
        submit: Callable[[list[Any]], Awaitable[_InFlight]],
        items: _Items,
        plan: MapPlan,
        ordered: bool,
        stop: Optional[Callable[[list[Future[Any]]], Awaitable[None]]] = None,
    ) -> None:
        self._submit = submit
        self._stop = stop  # stops the chunks still running when the iteration ends early
        self._items = items
        self._sizer = ChunkSizer(plan.chunksize)
        self._window = plan.window
        self._ordered = ordered
        self._reporter: Optional[Reporter] = plan.reporter
        self._deadline = None if plan.timeout is None else time.monotonic() + plan.timeout
        self._in_flight: deque[_InFlight] = deque()
        self._exhausted = False

    async def results(self) -> AsyncIterator[Any]:
        try:
            await self._refill()
            while self._in_flight:
                done = await self._wait()
                for chunk in done:
                    self._in_flight.remove(chunk)
                    chunk.settle()
                    chunk.observe(self._sizer)
                await self._refill()
                for chunk in done:
                    for value in self._hand_out(chunk):
                        yield value
        finally:
            for chunk in self._in_flight:
                chunk.cancel()
            running = [chunk.future for chunk in self._in_flight if not chunk.future.done()]
            if self._reporter is not None:
                self._reporter.close()
            if running and self._stop is not None:  # closed, cancelled or failed early
                await self._stop(running)

    async def _refill(self) -> None:
        while not self._exhausted and len(self._in_flight) < self._window:
            chunk = await self._items.take(self._sizer.size)
            if not chunk:
                self._exhausted = True
                return
            self._sizer.weigh(chunk)
            self._in_flight.append(await self._submit(chunk))

    async def _wait(self) -> list[_InFlight]:
        """The chunks whose results are due: the oldest (ordered), or whichever finished."""
        remaining = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        waiting = [self._in_flight[0]] if self._ordered else list(self._in_flight)
        finished, _ = await asyncio.wait(
            {chunk.waiter for chunk in waiting},
            timeout=remaining,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not finished:
            raise asyncio.TimeoutError("amap() results were not ready within its timeout")
        return [chunk for chunk in waiting if chunk.waiter in finished]

    def _hand_out(self, chunk: _InFlight) -> Iterator[Any]:
        """The chunk's values; a failed item is raised, or passed to ``on_error`` and skipped."""
        reporter = self._reporter
        for ok, value in chunk.outcomes():
            if ok:
                if reporter is not None:
                    reporter.result(value)
                yield value
            elif reporter is None or not reporter.error(value):
                raise value
