"""How a worker of jobpool's own runs a job and reports it: one code for process and Dask workers.

Both kinds of worker receive a job as bytes (the function, and the pickled arguments or chunk),
run it, and send back a tag and bytes: the pickled result, or the packed exception with its
traceback (``_remote``). A ``map`` chunk whose results do not pickle together goes back with
the items that pickle alone, the others failed with their own error. Both keep recent large
functions unpickled (:class:`KeptFunctions`), so a ``map`` that sends the same function with
every chunk unpickles it once per worker. The tags are the same on both backends (``_protocol``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Callable, Optional

from . import _main_globals
from ._protocol import FUNCTION_CACHE_SIZE, OK, RAISED, RUN_CALL, RUN_CHUNK
from ._remote_exceptions import pack_exception
from ._serialization import ITEM_RESULT, dumps
from ._work import ChunkResult, run_chunk


def dump_result(value: Any) -> bytes:
    return dumps(value, "the job's result", to_worker=False)


def run_to_reply(
    kind: int,
    fn: Callable[..., Any],
    body: Any,
    load: Callable[[Any], Any] = _main_globals.loads,
    dump: Callable[[Any], Any] = dump_result,
) -> tuple[int, Any]:
    """Run one call or chunk whose arguments ``load(body)`` gives; ``(OK, dump(result))`` or
    ``(RAISED, packed exception)``. (The process backend loads and dumps large buffers its own
    way, through shared memory.)"""
    value = None
    try:
        args = load(body)
        value = fn(*args[0], **args[1]) if kind == RUN_CALL else run_chunk(fn, args[0], args[1])
        return OK, dump(value)
    except BaseException as exc:
        if kind == RUN_CHUNK and type(value) is ChunkResult:  # the chunk ran; it did not dump
            return _dump_by_item(value, dump, exc)
        return RAISED, pack_exception(exc)


def _dump_by_item(
    result: ChunkResult, dump: Callable[[Any], Any], error: BaseException
) -> tuple[int, Any]:
    """A chunk whose values do not serialize together: each item that does not serialize alone
    fails with its own SerializationError, and the rest go back as usual.

    Only after the whole chunk failed to dump, so the fast path pickles it once.
    """
    failures: dict[int, BaseException] = {}
    for index, value in enumerate(result.values):
        if result.errors and index in result.errors:
            continue
        try:
            dumps(value, ITEM_RESULT, to_worker=False)
        except BaseException as exc:
            failures[index] = exc
    if not failures:  # no single item is to blame (out of memory, say): the chunk fails
        return RAISED, pack_exception(error)
    result.fail_items(failures)
    try:
        return OK, dump(result)
    except BaseException as exc:
        return RAISED, pack_exception(exc)


class BrokenFunction:
    """Stands in for a function that failed to unpickle here: calling it raises why."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


class KeptFunctions:
    """A worker's recent functions, unpickled, with the script's globals each came with.

    Running a kept copy again first settles those globals again (``_main_globals.settle``): the
    job sees the values of its own submit even if another function loaded since brought others.
    """

    def __init__(self, capacity: int = FUNCTION_CACHE_SIZE) -> None:
        self._kept: OrderedDict[Hashable, tuple[Callable[..., Any], tuple[Any, ...]]]
        self._kept = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def keep(self, key: Hashable, load: Callable[[], Any]) -> Callable[..., Any]:
        """Unpickle a function with ``load`` and keep it under ``key``; a failure is kept too."""
        fn: Callable[..., Any]
        entry: tuple[Callable[..., Any], tuple[Any, ...]]
        try:
            with _main_globals.collecting() as script_globals:
                fn = load()
            entry = (fn, tuple(script_globals))
        except BaseException as exc:
            entry = (BrokenFunction(exc), ())
        with self._lock:
            self._kept[key] = entry
            if len(self._kept) > self._capacity:
                self._kept.popitem(last=False)
        return entry[0]

    def get(self, key: Hashable) -> Optional[Callable[..., Any]]:
        """The kept function ``key``, its script's globals put back; None if not kept."""
        with self._lock:
            entry = self._kept.get(key)
            if entry is None:
                return None
            self._kept.move_to_end(key)
        fn, script_globals = entry
        if script_globals:
            _main_globals.settle(script_globals)
        return fn
