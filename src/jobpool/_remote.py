"""What comes back from a worker: an exception with its type and traceback, or a result.

The worker pickles the exception together with its formatted traceback; the parent re-raises the
original type with the traceback attached as ``__cause__`` (as ``concurrent.futures`` does). An
exception that cannot be pickled, or not unpickled in the parent, is still reported: as a
:class:`RemoteError` naming the original type and message. Its message travels once, in the
exception, not again in the traceback text.

A result that cannot be loaded in the parent fails its job with :class:`ResultLoadError`, which
names the part, the class or function, and the cause (see ``_salvage``); in a ``map`` chunk only
the items that do not load fail.
"""

from __future__ import annotations

import functools
import pickle
import struct
import traceback
from typing import TYPE_CHECKING, Any, Callable, Optional

from ._errors import RemoteError, RemoteTraceback, ResultLoadError
from ._job import CHUNK_REBUILDERS, Chunk, ChunkResult, Job, Outcomes
from ._serialization import dumps

if TYPE_CHECKING:  # imported when a result fails to load: workers import this module to start
    from ._salvage import Failed, FailedIn

#: How loading a result again, part by part, is done (see :func:`load_failed`): given the
#: callables that may take failed parts, it returns the value and how to find those parts.
Salvage = Callable[[tuple[Any, ...]], "tuple[Any, FailedIn]"]
RESULT = "the job's result"
ITEM_RESULT = "the item's result"
LOAD_FIX = (
    "The job ran and its result was sent back; every class and function the result's pickle "
    "names must be importable, and rebuild without error, in the caller as in the worker."
)


# A packed exception: the length of its first pickle, that pickle (traceback text, type name,
# message), then the exception's own pickle (nothing if it could not travel as itself).
_HEAD = struct.Struct("<Q")
# Longer exception messages are cut where they would travel a second time: in the traceback
# text (the exception itself carries the message) and in the fallback message for an exception
# that pickled but may not load in the caller. A 100 MB message travels once, as a 100 MB result.
MESSAGE_IN_FULL = 64 * 1024


def pack_exception(exc: BaseException) -> bytes:
    type_name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        exc_bytes = dumps(exc, "exception", to_worker=False)
        pickle.loads(exc_bytes)  # some exceptions pickle but cannot be rebuilt (bad __init__)
    except Exception:
        exc_bytes = b""
    message = _safe_str(exc)
    if exc_bytes:  # only a fallback then: the exception carries its message
        message = _cut(message, "not sent: the exception itself carries them")
    tb = _traceback_text(exc)
    head = pickle.dumps((tb, type_name, message), pickle.HIGHEST_PROTOCOL)
    return b"".join((_HEAD.pack(len(head)), head, exc_bytes))


def unpack_exception(data: bytes) -> BaseException:
    with memoryview(data) as view:  # slices of it are read in place, not copied
        start = _HEAD.size
        end = start + _HEAD.unpack_from(view)[0]
        tb, type_name, message = pickle.loads(view[start:end])
        exc: BaseException
        try:
            if end == len(view):
                raise ValueError("not picklable")
            exc = pickle.loads(view[end:])
        except Exception:
            exc = RemoteError(type_name, message)
    exc.__cause__ = RemoteTraceback(tb)
    return exc


def _traceback_text(exc: BaseException) -> str:
    """The formatted traceback, the exception's own message cut if it is long (see above)."""
    try:
        formatted = traceback.TracebackException(type(exc), exc, exc.__traceback__)
        text = getattr(formatted, "_str", None)  # its message (a private name, 3.9 to 3.13)
        if isinstance(text, str) and len(text) > MESSAGE_IN_FULL:
            formatted._str = _cut(text, "in the exception itself")  # type: ignore[attr-defined]
        return "".join(formatted.format())
    except Exception:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _cut(text: str, where_the_rest_is: str) -> str:
    if len(text) <= MESSAGE_IN_FULL:
        return text
    rest = len(text) - MESSAGE_IN_FULL
    return f"{text[:MESSAGE_IN_FULL]}... [{rest:,} more characters, {where_the_rest_is}]"


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


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<exception str() failed>"
