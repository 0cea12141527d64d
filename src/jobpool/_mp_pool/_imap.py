"""``imap`` and ``imap_unordered``: results read lazily, a bounded window ahead, per-item errors.

The stdlib's ``imap`` first hands its whole input to a feeder thread, so an endless generator
never ends and a large one is read into memory. Here the map is ``jobpool.Pool.map``'s windowed
map: the input is read only a bounded number of chunks ahead of the results taken, in chunks
whose size adapts to how long items take (1 while items are slow). What the stdlib's iterator
adds on top, and this module gives too:

- an item that raised raises when its turn comes, and the iteration goes on after it (a worker
  that crashed fails each item of its chunk with ``WorkerCrashedError``);
- an exception from the input itself is raised after the results of every item read before it;
- ``next(timeout)`` raises ``multiprocessing.TimeoutError`` when the next result is not there in
  time, and the iterator stays usable.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, Generic, Optional, TypeVar

from .._map import windowed_map
from ._chunks import chunk_submitter

if TYPE_CHECKING:
    from .._pool import Pool

T = TypeVar("T")
FIXED_CHUNKS_WINDOW = 16


class WaitLimit:
    """The limit of the ``next(timeout)`` call under way; the map waits for chunks through it.

    It is the windowed map's ``NextWait`` (``resumable``): while a chunk is awaited the map hands
    out a :class:`_Turn` in its place, which waits until this deadline (none outside
    ``next(timeout)``).
    """

    __slots__ = ("deadline",)

    def __init__(self) -> None:
        self.deadline: Optional[float] = None

    def __call__(self, ready: Callable[[Optional[float]], bool]) -> Iterator[Any]:
        return _Turn(self, ready)


class _Turn:
    """Waits for a chunk: ends once it is there; raises (and stays) while the limit runs out."""

    __slots__ = ("_limit", "_ready")

    def __init__(self, limit: WaitLimit, ready: Callable[[Optional[float]], bool]) -> None:
        self._limit = limit
        self._ready = ready

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        deadline = self._limit.deadline
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if self._ready(timeout):
            raise StopIteration
        raise multiprocessing.TimeoutError("the next result was not ready in time")


class IMapIterator(itertools.chain, Generic[T]):  # type: ignore[type-arg]
    """What ``imap`` and ``imap_unordered`` return: an iterator with ``next(timeout)``.

    It is ``itertools.chain`` over the windowed map, so taking a result runs no Python code;
    only ``next(timeout)`` does.
    """

    __slots__ = ("_limit",)

    _limit: WaitLimit

    def next(self, timeout: Optional[float] = None) -> T:
        """The next result; ``multiprocessing.TimeoutError`` if not there within ``timeout``."""
        if timeout is None:
            return self.__next__()
        self._limit.deadline = time.monotonic() + timeout
        try:
            return self.__next__()
        finally:
            self._limit.deadline = None

    if TYPE_CHECKING:

        def __next__(self) -> T: ...


def imap(
    pool: Pool,
    where: str,
    fn: Callable[..., Any],
    iterable: Iterable[Any],
    chunksize: Optional[int],
    ordered: bool,
    buffersize: Optional[int],
) -> IMapIterator[Any]:
    """Start a lazy map of ``fn`` over ``iterable`` on ``pool``; its first window is sent now.

    At most ``buffersize`` chunks are in flight: by default twice the workers, and at least
    :data:`FIXED_CHUNKS_WINDOW` when the caller fixed a chunk size (small fixed chunks need a
    deeper pipeline to keep the workers busy; adaptive ones grow instead).
    """
    items = iter(iterable)
    submit, plan = chunk_submitter(pool, where, fn, chunksize, False, buffersize)
    window = (
        plan.window if buffersize or chunksize is None else max(plan.window, FIXED_CHUNKS_WINDOW)
    )
    limit = WaitLimit()
    results = windowed_map(
        submit,
        items,
        chunksize=plan.chunksize,
        window=window,
        ordered=ordered,
        timeout=None,
        resumable=limit,
    )
    iterator: IMapIterator[Any] = IMapIterator(results)
    iterator._limit = limit
    return iterator
