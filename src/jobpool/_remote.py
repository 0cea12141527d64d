"""What a worker's reply does to its job: a result loaded, or an exception re-raised as itself.

A job's exception comes back packed with its worker-side traceback (``_remote_exceptions``) and
fails the job as its own type. A result that cannot be loaded in the caller fails its job with
:class:`ResultLoadError`, which names the part, the class or function, and the cause (see
``_salvage``); in a ``map`` chunk only the items that do not load fail.
"""

from __future__ import annotations

import functools
import pickle
from typing import TYPE_CHECKING, Any, Callable, Optional

from ._errors import ResultLoadError
from ._job import CHUNK_REBUILDERS, Chunk, ChunkResult, Job, Outcomes
from ._remote_exceptions import unpack_exception
from ._serialization import ITEM_RESULT, RESULT

if TYPE_CHECKING:  # imported when a result fails to load: workers import this module to start
    from ._salvage import Failed, FailedIn

#: How loading a result again, part by part, is done (see :func:`load_failed`): given the
#: callables that may take failed parts, it returns the value and how to find those parts.
Salvage = Callable[[tuple[Any, ...]], "tuple[Any, FailedIn]"]
LOAD_FIX = (
    "The job ran and its result was sent back; every class and function the result's pickle "
    "names must be importable, and rebuild without error, in the caller as in the worker."
)


def settle_reply(outcomes: Outcomes, job: Job, raised: bool, data: bytes) -> None:
    """Resolve ``job`` with a worker's reply: its pickled result, or its packed exception."""
    if raised:
        outcomes.fail(job, unpack_exception(data))
        return
    try:
        value = pickle.loads(data)
    except BaseException as exc:
        succeeded, value = load_failed(job, exc, functools.partial(_salvage, data))
        if not succeeded:
            outcomes.fail(job, value)
            return
    outcomes.succeed(job, value)


def load_failed(job: Job, error: BaseException, salvage: Salvage) -> tuple[bool, Any]:
    """After loading ``job``'s result raised ``error``: ``(False, ResultLoadError)`` naming the
    part that failed and why; or ``(True, value)`` when the result loads after all.

    A ``map`` chunk is loaded again part by part (``salvage``): its items that load are kept,
    and each one that does not fails alone. A single result is loaded again the same way to
    find the part that failed (or, if the failure was passing, such as a MemoryError, to load it
    after all). Only called on that failure: the fast path is the plain load.
    """
    if not isinstance(error, Exception):  # Ctrl-C in a caller reading its own reply
        return False, error
    chunk = type(job.work) is Chunk
    try:
        value, failed_in = salvage(CHUNK_REBUILDERS if chunk else ())
    except Exception:  # a failure outside the objects' own code: the result as a whole
        return False, result_load_error(None, RESULT, error)
    if chunk and type(value) is ChunkResult:
        failures: dict[int, BaseException] = {}
        for index, item in enumerate(value.values):
            found = failed_in(item, ITEM_RESULT)
            if found is not None:
                failures[index] = result_load_error(*found)
        value.fail_items(failures)
        return True, value
    found = failed_in(value, RESULT)
    if found is None:
        return True, value
    return False, result_load_error(*found)


def _salvage(data: bytes, accept: tuple[Any, ...]) -> tuple[Any, FailedIn]:
    from ._salvage import salvage

    return salvage(data, accept)


def result_load_error(
    failed: Optional[Failed], path: str, error: Optional[BaseException] = None
) -> ResultLoadError:
    """The error for a result (part) that cannot be loaded: ``failed`` says where, when known."""
    if failed is None:
        assert error is not None
        what, type_name = "loading it", None
    else:
        what, type_name, error = failed.step, failed.name, failed.error
    load_error = ResultLoadError(
        f"cannot load {path} in the caller: {what} raised {type(error).__name__}: {error}. "
        + LOAD_FIX,
        path,
        type_name,
    )
    load_error.__cause__ = error
    return load_error
