"""Pickling the arguments of a job that holds futures: each future becomes a placeholder.

A job whose arguments hold futures is pickled at ``submit`` like any other, so an argument that
cannot travel fails there, naming its part (``SerializationError``), before anything waits. The
futures themselves cannot be pickled, and their values do not exist yet: each one is written as
a placeholder (a pickle *persistent id*, ``("jobpool-input", i)``), which the Dask backend sends
as is and fills in on the worker (``_dask._inputs``), and the process backend only measures (it
pickles the job again with the values once they are there; see ``_dependencies``).
"""

from __future__ import annotations

import io
import pickle
from concurrent.futures import Future
from typing import Any

from ._errors import SerializationError
from ._job import Call, Chunk
from ._main_globals import share_main_globals
from ._picklers import PROTOCOL, load_cloudpickle
from ._pickling_advice import explain_failure

INPUT = "jobpool-input"  # persistent ids: (INPUT, index into the job's inputs)
_MAIN_MARKER = b"__main__"


class _Placeholders:
    """Mixed into a pickler: each future among ``positions`` (by id) becomes a placeholder."""

    positions: dict[int, int]

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Future):
            index = self.positions.get(id(obj))
            if index is not None:
                return (INPUT, index)
        return None


class _PlainPickler(_Placeholders, pickle.Pickler):
    pass


_cloud_pickler: Any = None  # made on first need: cloudpickle is imported lazily


def _pickler(cloud: bool, buffer: io.BytesIO, positions: dict[int, int]) -> Any:
    global _cloud_pickler
    if not cloud:
        pickler: Any = _PlainPickler(buffer, PROTOCOL)
    else:
        if _cloud_pickler is None:
            _cloud_pickler = type("CloudPickler", (_Placeholders, load_cloudpickle().Pickler), {})
        pickler = _cloud_pickler(buffer, PROTOCOL)
        share_main_globals(pickler)
    pickler.positions = positions
    return pickler


def arguments_of(work: Call | Chunk) -> Any:
    """What a job's body pickles: ``(args, kwargs)`` of a call, ``(items, star)`` of a chunk."""
    if isinstance(work, Call):
        return (work.args, work.kwargs)
    return (work.items, work.star)


def dump_arguments(work: Call | Chunk, futures: list[Future[Any]]) -> bytes:
    """Pickle ``work``'s arguments with ``futures[i]`` as placeholder ``i``: plain pickle first,
    cloudpickle when it refuses (as ``_serialization.dumps``)."""
    positions = {id(future): index for index, future in enumerate(futures)}
    arguments = arguments_of(work)
    buffer = io.BytesIO()
    try:
        _pickler(False, buffer, positions).dump(arguments)
        data = buffer.getvalue()
        if _MAIN_MARKER not in data:
            return data
    except Exception:  # plain pickle refuses: cloudpickle may not
        pass
    buffer = io.BytesIO()
    try:
        _pickler(True, buffer, positions).dump(arguments)
    except Exception as exc:
        raise _explained(work, positions, exc) from exc
    return buffer.getvalue()


def _explained(work: Call | Chunk, positions: dict[int, int], exc: Exception) -> SerializationError:
    """The error naming the part that failed, found in the job without its futures (which are
    not what failed)."""

    def strip(value: Any, depth: int = 0) -> Any:
        if isinstance(value, Future) and id(value) in positions:
            return None
        if depth > 10:
            return value
        if type(value) in (list, tuple):
            return type(value)(strip(v, depth + 1) for v in value)
        if type(value) is dict:
            return {k: strip(v, depth + 1) for k, v in value.items()}
        return value

    if isinstance(work, Call):
        plain: Call | Chunk = Call(work.fn, strip(work.args), strip(work.kwargs))
    else:
        plain = Chunk(work.fn, strip(work.items), work.star)
    return explain_failure(plain, "job", exc)
