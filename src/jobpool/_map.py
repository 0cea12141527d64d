"""Lazy, windowed ``map``: never read more input than a bounded window ahead of the consumer.

The input is cut into chunks, each run by one worker as one job, so tiny items do not pay the
per-job round trip each. At most ``window`` chunks are in flight; the next chunk is read from the
input only when the caller has taken a result, so ``map(f, itertools.count())`` works and memory
stays flat. With ``chunksize=None`` the chunk size adapts: it grows while chunks finish faster than
:data:`TARGET_CHUNK_SECONDS` in the worker, and shrinks when they take much longer.
"""

from __future__ import annotations

import functools
import itertools
import queue
import sys
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from typing import Any, Callable, Optional, cast

from ._job import ChunkResult

TARGET_CHUNK_SECONDS = 0.02
MAX_CHUNK = 16384
# Read-ahead is bounded in items by the window; this bounds it in bytes for big items too: a
# chunk's items are kept under this size (estimated from the first item of each chunk).
MAX_CHUNK_BYTES = 4 << 20


class ChunkSizer:
    """Picks the next chunk's size from how long the previous chunks took in the worker."""

    def __init__(self, fixed: Optional[int]) -> None:
        self.fixed = fixed
        self.size = fixed or 1
        self._limit = MAX_CHUNK

    def weigh(self, chunk: list[Any]) -> None:
        """Shrink the chunks when their items are big (a chunk chosen by the caller stays)."""
        if self.fixed is None and chunk:
            self._limit = max(1, min(MAX_CHUNK, MAX_CHUNK_BYTES // _estimated_size(chunk[0])))
            self.size = min(self.size, self._limit)

    def observe(self, items: int, elapsed: float) -> None:
        if self.fixed is not None or items < self.size:
            return
        if elapsed < TARGET_CHUNK_SECONDS / 4:
            self.size = min(self.size * 4, self._limit)
        elif elapsed > TARGET_CHUNK_SECONDS * 4 and self.size > 1:
            self.size = max(1, self.size // 2)


def _estimated_size(item: Any) -> int:
    """Bytes of ``item``, roughly: its own size, plus its members' for a tuple of arguments.

    Exact for the big flat items that matter here (bytes, str, NumPy arrays); an estimate
    costs one call per chunk, where measuring a pickle would cost a copy.
    """
    try:
        size = sys.getsizeof(item)
        if type(item) is tuple:
            size += sum(sys.getsizeof(member) for member in item)
    except Exception:  # a __sizeof__ that fails: then only the time-based size applies
        return 1
    return max(1, size)


SubmitChunk = Callable[[list[Any]], "Future[ChunkResult]"]
#: How a consumer that limits each ``next()`` call waits for the next chunk (see
#: ``jobpool._mp_pool._imap``). It gets ``ready(timeout)``, which waits at most ``timeout``
#: seconds (None: no limit) and says whether the chunk is there, and returns an iterator that the
#: map hands out in the chunk's place: one that raises while the wait runs out and ends once the
#: chunk is there. An exception from it leaves the map where it was, so a later ``next()``
#: waits again.
NextWait = Callable[[Callable[[Optional[float]], bool]], Iterator[Any]]


def windowed_map(
    submit_chunk: SubmitChunk,
    items: Iterator[Any],
    *,
    chunksize: Optional[int],
    window: int,
    ordered: bool,
    timeout: Optional[float],
    next_wait: Optional[NextWait] = None,
) -> Iterator[Any]:
    """Submit the first window now (work starts at once, as with the stdlib), yield lazily."""
    sizer = ChunkSizer(chunksize)
    deadline = None if timeout is None else time.monotonic() + timeout
    if ordered:
        return _ordered(submit_chunk, items, sizer, window, deadline, next_wait)
    return _unordered(submit_chunk, items, sizer, window, deadline, next_wait)


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _settled(future: Future[Any], timeout: Optional[float]) -> bool:
    """Wait at most ``timeout`` for ``future``; whether it is done (``NextWait``'s ``ready``)."""
    try:
        future.exception(timeout)  # not result(): a failed chunk is for the map to raise
    except (FuturesTimeoutError, CancelledError):
        pass
    return future.done()


def _arrived(finished: queue.SimpleQueue[Any], timeout: Optional[float]) -> bool:
    """Wait at most ``timeout`` for a finished chunk (``NextWait``'s ``ready``, unordered)."""
    try:
        future = finished.get(timeout=timeout)
    except queue.Empty:
        return False
    finished.put(future)  # back for the map to take; finished chunks have no order among them
    return True


class MapIterator(itertools.chain):  # type: ignore[type-arg]
    """The iterator ``map`` returns: the values of each chunk in turn.

    It is ``itertools.chain`` over a generator of per-chunk iterators, so handing out an item
    runs no Python code, which is most of what the caller's thread does in a ``map`` over tiny
    items; only a chunk boundary resumes the generator. ``close()`` closes that generator, which
    cancels the chunks still in flight (as dropping the iterator does).
    """

    __slots__ = ("_chunks",)

    _chunks: Generator[Iterator[Any], None, None]

    @classmethod
    def over(cls, chunks: Generator[Iterator[Any], None, None]) -> MapIterator:
        iterator = cast(MapIterator, cls.from_iterable(chunks))  # an instance of cls at run time
        iterator._chunks = chunks
        return iterator

    def close(self) -> None:
        self._chunks.close()


class _HandOut:
    """Hands out each chunk's values for one ``map``, letting go of each value as it goes.

    Neither the chunk's list nor the iterator keeps a value the caller has taken alive, as
    ``Executor.map`` promises, and it is still C-level: one ``list.pop`` per turn. Nothing
    compares the values (``iter(values.pop, sentinel)`` would call each value's ``__eq__``,
    which NumPy arrays refuse). :meth:`stop` empties the turns, which ends the chunk being
    handed out (``close()``).
    """

    __slots__ = ("_turns",)

    def __init__(self) -> None:
        self._turns: list[list[Any]] = []

    def chunk(self, result: ChunkResult) -> Generator[Iterator[Any], None, None]:
        """Yield an iterator over ``result``'s values, then raise its first failed item's error.

        The error is raised through the chunks' generator (``yield from``), so it ends the
        ``map`` (as in ``Executor.map``) and that generator's cleanup cancels what is still
        in flight. The caller drops its own reference to ``result`` before iterating.
        """
        errors = result.errors
        if errors is None:
            values, error = result.values, None
        else:
            first = min(errors)
            values, error = result.values[:first], errors[first]
        del result  # with an error, its full list would keep values already handed out
        values.reverse()
        self._turns = [values] * len(values)
        yield map(_pop, self._turns)
        if error is not None:
            raise error

    def stop(self) -> None:
        self._turns.clear()


_pop = list.pop


def _ordered(
    submit_chunk: SubmitChunk,
    items: Iterator[Any],
    sizer: ChunkSizer,
    window: int,
    deadline: Optional[float],
    next_wait: Optional[NextWait],
) -> Iterator[Any]:
    in_flight: deque[tuple[Future[ChunkResult], int]] = deque()

    def refill() -> None:
        while len(in_flight) < window:
            chunk = list(itertools.islice(items, sizer.size))
            if not chunk:
                return
            sizer.weigh(chunk)
            in_flight.append((submit_chunk(chunk), len(chunk)))

    refill()

    def generate() -> Generator[Iterator[Any], None, None]:
        hand_out = _HandOut()
        try:
            while in_flight:
                future, count = in_flight[0]
                if next_wait is not None and not future.done():
                    yield next_wait(functools.partial(_settled, future))
                result = future.result(_remaining(deadline))
                in_flight.popleft()
                del future  # hold no reference to a result already handed out
                sizer.observe(count, result.elapsed)
                refill()
                chunk = hand_out.chunk(result)
                del result
                yield from chunk
        finally:
            hand_out.stop()  # after close(), not even the rest of this chunk is handed out
            for future, _ in in_flight:
                future.cancel()

    return MapIterator.over(generate())


def _unordered(
    submit_chunk: SubmitChunk,
    items: Iterator[Any],
    sizer: ChunkSizer,
    window: int,
    deadline: Optional[float],
    next_wait: Optional[NextWait],
) -> Iterator[Any]:
    finished: queue.SimpleQueue[Future[ChunkResult]] = queue.SimpleQueue()
    in_flight: dict[Future[ChunkResult], int] = {}

    def refill() -> None:
        while len(in_flight) < window:
            chunk = list(itertools.islice(items, sizer.size))
            if not chunk:
                return
            sizer.weigh(chunk)
            future = submit_chunk(chunk)
            in_flight[future] = len(chunk)
            future.add_done_callback(finished.put)

    refill()

    def generate() -> Generator[Iterator[Any], None, None]:
        hand_out = _HandOut()
        try:
            while in_flight:
                if next_wait is not None and finished.empty():
                    yield next_wait(functools.partial(_arrived, finished))
                try:
                    future = finished.get(timeout=_remaining(deadline))
                except queue.Empty:
                    raise FuturesTimeoutError("map() results were not ready within its timeout")
                count = in_flight.pop(future)
                result = future.result()
                del future
                sizer.observe(count, result.elapsed)
                refill()
                chunk = hand_out.chunk(result)
                del result
                yield from chunk
        finally:
            hand_out.stop()  # after close(), not even the rest of this chunk is handed out
            for future in in_flight:
                future.cancel()

    return MapIterator.over(generate())


def as_items(iterables: tuple[Iterable[Any], ...]) -> tuple[Iterator[Any], bool]:
    """One iterable maps items as they are; several are zipped and unpacked (``star``)."""
    if len(iterables) == 1:
        return iter(iterables[0]), False
    return zip(*iterables), True
