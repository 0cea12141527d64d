"""Lazy, windowed ``map``: never read more input than a bounded window ahead of the consumer.

The input is cut into chunks, each run by one worker as one job, so tiny items do not pay the
per-job round trip each. At most ``window`` chunks are in flight; the next chunk is read from the
input only when the caller has taken a result, so ``map(f, itertools.count())`` works and memory
stays flat. With ``chunksize=None`` the chunk size adapts: it grows while chunks finish faster than
:data:`TARGET_CHUNK_SECONDS` in the worker, and shrinks when they take much longer.
"""

from __future__ import annotations

import itertools
import queue
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from typing import Any, Callable, Optional

from ._job import ChunkResult

TARGET_CHUNK_SECONDS = 0.02
MAX_CHUNK = 4096


class ChunkSizer:
    """Picks the next chunk's size from how long the previous chunks took in the worker."""

    def __init__(self, fixed: Optional[int]) -> None:
        self.fixed = fixed
        self.size = fixed or 1

    def observe(self, items: int, elapsed: float) -> None:
        if self.fixed is not None or items < self.size:
            return
        if elapsed < TARGET_CHUNK_SECONDS / 4:
            self.size = min(self.size * 4, MAX_CHUNK)
        elif elapsed > TARGET_CHUNK_SECONDS * 4 and self.size > 1:
            self.size = max(1, self.size // 2)


SubmitChunk = Callable[[list[Any]], "Future[ChunkResult]"]


def windowed_map(
    submit_chunk: SubmitChunk,
    items: Iterator[Any],
    *,
    chunksize: Optional[int],
    window: int,
    ordered: bool,
    timeout: Optional[float],
) -> Iterator[Any]:
    """Submit the first window now (work starts at once, as with the stdlib), yield lazily."""
    sizer = ChunkSizer(chunksize)
    deadline = None if timeout is None else time.monotonic() + timeout
    if ordered:
        return _ordered(submit_chunk, items, sizer, window, deadline)
    return _unordered(submit_chunk, items, sizer, window, deadline)


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


_END = object()  # marks the end of a chunk's values (never a job's result)


def _yield_chunk(result: ChunkResult) -> Iterator[Any]:
    """Hand out a chunk's values, letting go of each one as it is yielded.

    The chunk's list is emptied as it goes, so neither the iterator nor the chunk's future keeps
    a yielded result alive. Without errors this is a C-level iterator (``list.pop`` until the
    end marker): handing out an item costs no Python frame, which is most of what the caller's
    thread does in a ``map`` over tiny items.
    """
    values, errors = result.values, result.errors
    values.append(_END)
    values.reverse()
    if errors is None:
        return iter(values.pop, _END)
    return _yield_with_errors(values, errors)


def _yield_with_errors(values: list[Any], errors: dict[int, BaseException]) -> Iterator[Any]:
    pop = values.pop
    index = 0
    while True:
        value = pop()
        if value is _END:
            return
        error = errors.pop(index, None)
        index += 1
        if error is not None:
            raise error
        yield value


def _ordered(
    submit_chunk: SubmitChunk,
    items: Iterator[Any],
    sizer: ChunkSizer,
    window: int,
    deadline: Optional[float],
) -> Iterator[Any]:
    in_flight: deque[tuple[Future[ChunkResult], int]] = deque()

    def refill() -> None:
        while len(in_flight) < window:
            chunk = list(itertools.islice(items, sizer.size))
            if not chunk:
                return
            in_flight.append((submit_chunk(chunk), len(chunk)))

    refill()

    def generate() -> Iterator[Any]:
        try:
            while in_flight:
                future, count = in_flight[0]
                result = future.result(_remaining(deadline))
                in_flight.popleft()
                del future  # hold no reference to a result already handed out
                sizer.observe(count, result.elapsed)
                refill()
                chunk = _yield_chunk(result)
                del result
                yield from chunk
        finally:
            for future, _ in in_flight:
                future.cancel()

    return generate()


def _unordered(
    submit_chunk: SubmitChunk,
    items: Iterator[Any],
    sizer: ChunkSizer,
    window: int,
    deadline: Optional[float],
) -> Iterator[Any]:
    finished: queue.SimpleQueue[Future[ChunkResult]] = queue.SimpleQueue()
    in_flight: dict[Future[ChunkResult], int] = {}

    def refill() -> None:
        while len(in_flight) < window:
            chunk = list(itertools.islice(items, sizer.size))
            if not chunk:
                return
            future = submit_chunk(chunk)
            in_flight[future] = len(chunk)
            future.add_done_callback(finished.put)

    refill()

    def generate() -> Iterator[Any]:
        try:
            while in_flight:
                try:
                    future = finished.get(timeout=_remaining(deadline))
                except queue.Empty:
                    raise FuturesTimeoutError("map() results were not ready within its timeout")
                count = in_flight.pop(future)
                result = future.result()
                del future
                sizer.observe(count, result.elapsed)
                refill()
                chunk = _yield_chunk(result)
                del result
                yield from chunk
        finally:
            for future in in_flight:
                future.cancel()

    return generate()


def as_items(iterables: tuple[Iterable[Any], ...]) -> tuple[Iterator[Any], bool]:
    """One iterable maps items as they are; several are zipped and unpacked (``star``)."""
    if len(iterables) == 1:
        return iter(iterables[0]), False
    return zip(*iterables), True
