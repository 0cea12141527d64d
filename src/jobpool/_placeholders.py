"""Pickling the arguments of a job that holds futures: each future becomes a placeholder.

A job whose arguments hold futures is pickled at ``submit`` like any other, so an argument that
cannot travel fails there, naming its part (``SerializationError``), before anything waits. The
futures themselves cannot be pickled, and their values do not exist yet: each one is written as
a placeholder (a pickle *persistent id*, ``("jobpool-input", i)``), which the Dask backend sends
as is and fills in on the worker (``_dask_inputs``), and the process backend only measures (it
pickles the job again with the values once they are there; see ``_dependencies``).
"""

from __future__ import annotations

import io
import pickle
from concurrent.futures import Future
from typing import Any, Callable

from ._errors import SerializationError
from ._job import Call, Chunk
from ._main_globals import share_main_globals
from ._serialization import PROTOCOL, _cloudpickle, explain_failure

INPUT = "jobpool-input"  # persistent ids: (INPUT, index into the job's inputs)
_MAIN_MARKER = b"__main__"


def _pickler(base: Any, positions: dict[int, int]) -> Callable[..., Any]:
    """A ``base`` pickler class whose futures (by id) become placeholders."""

    class Pickler(base):  # type: ignore[misc]
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, Future):
                index = positions.get(id(obj))
                if index is not None:
                    return (INPUT, index)
            return None

    return Pickler


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
        _pickler(pickle.Pickler, positions)(buffer, PROTOCOL).dump(arguments)
        data = buffer.getvalue()
        if _MAIN_MARKER not in data:
            return data
    except Exception:  # plain pickle refuses: cloudpickle may not
        pass
    buffer = io.BytesIO()
    try:
        pickler = _pickler(_cloudpickle().Pickler, positions)(buffer, PROTOCOL)
        share_main_globals(pickler)
        pickler.dump(arguments)
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
