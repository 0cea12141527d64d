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
#: How a resumable map waits for its next chunk (see ``windowed_map``). It gets
#: ``ready(timeout)``, which waits at most ``timeout`` seconds (None: no limit) and says whether
#: the chunk is there, and returns an iterator that the map hands out in the chunk's place: one
#: that raises while the wait runs out and ends once the chunk is there. An exception from it
#: leaves the map where it was, so a later ``next()`` waits again.
NextWait = Callable[[Callable[[Optional[float]], bool]], Iterator[Any]]
CANCELLED = "a chunk of this map was cancelled before it ran: its pool was shut down or terminated"


def windowed_map(
    submit_chunk: SubmitChunk,
    items: Iterator[Any],
    *,
    chunksize: Optional[int],
    window: int,
    ordered: bool,
    timeout: Optional[float],
    resumable: Optional[NextWait] = None,
) -> Iterator[Any]:
    """Submit the first window now (work starts at once, as with the stdlib), yield lazily.

    A failed item raises when its turn comes and ends the map, as with ``Executor.map``.
    ``resumable`` gives ``multiprocessing.Pool.imap``'s iterator instead: a failed item (or each
    item of a chunk that failed as a whole, its worker crashed) raises at its turn and the next
    ``next()`` goes on after it; each wait for a chunk goes through ``resumable``, so a caller
    can limit how long one ``next()`` waits.
    """
    sizer = ChunkSizer(chunksize)
    deadline = None if timeout is None else time.monotonic() + timeout
    resuming = resumable is not None
    in_flight = _Window(resuming) if ordered else _UnorderedWindow(resuming)
    source = _Input(items, resuming)
    return _windowed(submit_chunk, source, sizer, in_flight, window, deadline, resumable)


class _Input:
    """The map's input, read a chunk at a time.

    In a resumable map an exception from the input ends it there: the items read before it still
    run, and the exception is raised after their results (``list.extend`` keeps the items it got
    before the error, so this costs nothing per item).
    """

    __slots__ = ("_items", "_resumable", "error")

    def __init__(self, items: Iterator[Any], resumable: bool) -> None:
        self._items = items
        self._resumable = resumable
        self.error: Optional[Exception] = None

    def take(self, size: int) -> list[Any]:
        if not self._resumable:
            return list(itertools.islice(self._items, size))
        chunk: list[Any] = []
        try:
            chunk.extend(itertools.islice(self._items, size))
        except Exception as exc:
            self.error = exc
            self._items = iter(())
        return chunk

    def last(self) -> Iterator[Any]:
        """What a resumable map hands out after its last result: the input's exception."""
        return _RaiseOnce(self.error)


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _chunk_result(
    future: Future[ChunkResult], deadline: Optional[float], count: int, resumable: bool
) -> ChunkResult:
    """The chunk's result; in a resumable map a chunk that failed as a whole fails each item."""
    try:
        return future.result(_remaining(deadline))
    except CancelledError:
        raise CancelledError(CANCELLED) from None
    except BaseException as exc:
        if not resumable or not future.done():  # not the chunk's failure: the wait's
            raise
        return ChunkResult([None] * count, dict.fromkeys(range(count), exc), TARGET_CHUNK_SECONDS)


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

    __slots__ = ("_resumable", "_turns")

    def __init__(self, resumable: bool) -> None:
        self._turns: list[list[Any]] = []
        self._resumable = resumable

    def chunk(self, result: ChunkResult) -> Generator[Iterator[Any], None, None]:
        """Yield an iterator over ``result``'s values, then raise its first failed item's error.

        The error is raised through the chunks' generator (``yield from``), so it ends the
        ``map`` (as in ``Executor.map``) and that generator's cleanup cancels what is still
        in flight. The caller drops its own reference to ``result`` before iterating. In a
        resumable map each failed item's error is handed out in its place instead.
        """
        if self._resumable and result.errors:
            yield from self._around(result.values, result.errors)
            return
        values, error = result.until_first_error()
        del result  # with an error, its full list would keep values already handed out
        values.reverse()
        self._turns = [values] * len(values)
        yield map(_pop, self._turns)
        if error is not None:
            raise error

    def _around(
        self, values: list[Any], errors: dict[int, BaseException]
    ) -> Generator[Iterator[Any], None, None]:
        values.reverse()
        position = 0
        for index in sorted(errors):
            self._turns = [values] * (index - position)
            yield map(_pop, self._turns)
            values.pop()  # the failed item's place
            yield _RaiseOnce(errors[index])
            position = index + 1
        self._turns = [values] * len(values)
        yield map(_pop, self._turns)

    def stop(self) -> None:
        self._turns.clear()


class _RaiseOnce:
    """An iterator that raises ``error`` at its first ``next()`` and ends at the second.

    ``itertools.chain`` keeps an iterator that raised as its current one, so the map's next
    ``next()`` ends this one and goes on with the rest. The traceback is reset at each raise:
    one exception may stand for every item of a chunk that failed as a whole.
    """

    __slots__ = ("_error", "_traceback")

    def __init__(self, error: Optional[BaseException]) -> None:
        self._error = error
        self._traceback = None if error is None else error.__traceback__

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        error, self._error = self._error, None
        if error is None:
            raise StopIteration
        raise error.with_traceback(self._traceback)


_pop = list.pop


class _Window:
    """The chunks in flight of one ordered ``map``: results are taken oldest first."""

    def __init__(self, resumable: bool) -> None:
        self._chunks: deque[tuple[Future[ChunkResult], int]] = deque()
        self._resumable = resumable

    def __len__(self) -> int:
        return len(self._chunks)

    def add(self, future: Future[ChunkResult], count: int) -> None:
        self._chunks.append((future, count))

    def ready(self) -> Optional[Callable[[Optional[float]], bool]]:
        """None if the next chunk is done; else how to wait for it (``NextWait``'s ``ready``)."""
        future = self._chunks[0][0]
        return None if future.done() else functools.partial(_settled, future)

    def next_done(self, deadline: Optional[float]) -> tuple[ChunkResult, int]:
        """The next chunk's result (waiting for it) and its number of items."""
        future, count = self._chunks[0]
        result = _chunk_result(future, deadline, count, self._resumable)
        self._chunks.popleft()
        return result, count

    def futures(self) -> Iterator[Future[ChunkResult]]:
        return (future for future, _ in self._chunks)


class _UnorderedWindow(_Window):
    """The chunks in flight of an unordered ``map``: results are taken as they complete."""

    def __init__(self, resumable: bool) -> None:
        self._finished: queue.SimpleQueue[Future[ChunkResult]] = queue.SimpleQueue()
        self._counts: dict[Future[ChunkResult], int] = {}
        self._resumable = resumable

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, future: Future[ChunkResult], count: int) -> None:
        self._counts[future] = count
        future.add_done_callback(self._finished.put)

    def ready(self) -> Optional[Callable[[Optional[float]], bool]]:
        if not self._finished.empty():
            return None
        return functools.partial(_arrived, self._finished)

    def next_done(self, deadline: Optional[float]) -> tuple[ChunkResult, int]:
        try:
            future = self._finished.get(timeout=_remaining(deadline))
        except queue.Empty:
            raise FuturesTimeoutError("map() results were not ready within its timeout")
        count = self._counts.pop(future)
        return _chunk_result(future, None, count, self._resumable), count

    def futures(self) -> Iterator[Future[ChunkResult]]:
        return iter(self._counts)


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


def _windowed(
    submit_chunk: SubmitChunk,
    source: _Input,
    sizer: ChunkSizer,
    window: _Window,
    size: int,
    deadline: Optional[float],
    resumable: Optional[NextWait],
) -> Iterator[Any]:
    def refill() -> None:
        while len(window) < size:
            chunk = source.take(sizer.size)
            if not chunk:
                return
            sizer.weigh(chunk)
            window.add(submit_chunk(chunk), len(chunk))

    refill()

    def generate() -> Generator[Iterator[Any], None, None]:
        hand_out = _HandOut(resumable is not None)
        try:
            while len(window):
                if resumable is not None:
                    ready = window.ready()
                    if ready is not None:
                        yield resumable(ready)
                result, count = window.next_done(deadline)
                sizer.observe(count, result.elapsed)
                refill()
                chunk = hand_out.chunk(result)
                del result  # hold no reference to a result already handed out
                yield from chunk
            if source.error is not None:
                yield source.last()
        finally:
            hand_out.stop()  # after close(), not even the rest of this chunk is handed out
            for future in window.futures():
                future.cancel()

    return MapIterator.over(generate())


def as_items(iterables: tuple[Iterable[Any], ...]) -> tuple[Iterator[Any], bool]:
    """One iterable maps items as they are; several are zipped and unpacked (``star``)."""
    if len(iterables) == 1:
        return iter(iterables[0]), False
    return zip(*iterables), True
