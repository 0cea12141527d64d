"""The work a job carries, and how a worker runs it: one call, or a ``map`` chunk.

Kept apart from ``_job`` (queues, futures, retries), so that a worker, which imports this to
run chunks, does not import the caller's machinery.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Optional

from ._per_worker import bound
from ._remote_exceptions import pack_exception, unpack_exception


class Call:
    """One call ``fn(*args, **kwargs)``."""

    __slots__ = ("args", "fn", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def run(self) -> Any:
        return self.fn(*self.args, **self.kwargs)

    def __jobpool_parts__(self, path: str) -> list[tuple[str, Any]]:
        """Its parts as a ``SerializationError`` names them (see ``_pickling_advice``)."""
        parts: list[tuple[str, Any]] = [("fn", self.fn)]
        parts += [(f"args[{i}]", a) for i, a in enumerate(self.args)]
        parts += [(f"kwargs[{k!r}]", v) for k, v in self.kwargs.items()]
        return parts


class ChunkResult:
    """Per-item outcomes of a chunk: values in order, and the exceptions of the items that raised.

    One bad item hides no others; ``elapsed`` (worker-side seconds) lets ``map`` size the next
    chunk.
    """

    __slots__ = ("elapsed", "errors", "values")

    def __init__(
        self, values: list[Any], errors: Optional[dict[int, BaseException]], elapsed: float
    ) -> None:
        self.values = values
        self.errors = errors
        self.elapsed = elapsed

    def __reduce__(self) -> tuple[Any, ...]:
        if not self.errors:
            return (ChunkResult, (self.values, self.errors, self.elapsed))
        # Each failed item's exception travels as a single job's does: with its worker-side
        # traceback, and as a RemoteError if it cannot be pickled itself.
        packed = {i: pack_exception(exc) for i, exc in self.errors.items()}
        return (_unpack_chunk_result, (self.values, packed, self.elapsed))

    def fail_items(self, failures: dict[int, BaseException]) -> None:
        """Fail these items after all (their results could not be loaded in the caller)."""
        if not failures:
            return
        if self.errors is None:
            self.errors = {}
        for index, error in failures.items():
            self.errors[index] = error
            self.values[index] = None

    def outcomes(self) -> Iterator[tuple[bool, Any]]:
        """``(True, value)`` or ``(False, exception)`` for each item, in order."""
        errors = self.errors
        if errors is None:
            for value in self.values:
                yield True, value
            return
        for index, value in enumerate(self.values):
            if index in errors:
                yield False, errors[index]
            else:
                yield True, value

    def until_first_error(self) -> tuple[list[Any], Optional[BaseException]]:
        """The values before the first item that raised, and its exception (or all, None)."""
        errors = self.errors
        if errors is None:
            return self.values, None
        first = min(errors)
        return self.values[:first], errors[first]


def _unpack_chunk_result(
    values: list[Any], packed: dict[int, bytes], elapsed: float
) -> ChunkResult:
    return ChunkResult(values, {i: unpack_exception(data) for i, data in packed.items()}, elapsed)


#: What rebuilds a ChunkResult from its pickle: given items that could not be loaded, they keep
#: them, so that only those items fail (see ``_remote.load_failed``).
CHUNK_REBUILDERS = (ChunkResult, _unpack_chunk_result)


def run_chunk(fn: Callable[..., Any], items: Sequence[Any], star: bool) -> ChunkResult:
    """Apply ``fn`` to every item (unpacking tuples when ``star``), keeping each outcome.

    The items run through C-level ``map``; when one raises, its error is recorded and the rest
    of the chunk continues after it, so each item runs exactly once.
    """
    values: list[Any] = []
    errors: Optional[dict[int, BaseException]] = None
    apply = itertools.starmap if star else map
    start = time.perf_counter()
    position = 0
    total = len(items)
    while position < total:
        try:
            rest = items if position == 0 else itertools.islice(items, position, None)
            values.extend(apply(bound(fn), rest))  # a per_worker method: looked up once
        except BaseException as exc:
            if errors is None:
                errors = {}
            errors[len(values)] = exc
            values.append(None)
        position = len(values)
    return ChunkResult(values, errors, time.perf_counter() - start)


class Chunk:
    """Several items of a ``map``, run by one worker in one go to save per-job overhead."""

    __slots__ = ("fn", "items", "star")
    result_type = ChunkResult  # what run() returns

    def __init__(self, fn: Callable[..., Any], items: list[Any], star: bool) -> None:
        self.fn = fn
        self.items = items
        self.star = star

    def run(self) -> ChunkResult:
        return run_chunk(self.fn, self.items, self.star)

    def __jobpool_parts__(self, path: str) -> list[tuple[str, Any]]:
        """Its items as a ``SerializationError`` names them (see ``_pickling_advice``)."""
        return [(f"items[{i}]", item) for i, item in enumerate(self.items)]
