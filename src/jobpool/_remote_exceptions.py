"""An exception raised in a worker, packed to travel back with its traceback, unpacked as itself.

The worker pickles the exception together with its formatted traceback; the caller re-raises the
original type with the traceback attached as ``__cause__`` (as ``concurrent.futures`` does). An
exception that cannot be pickled, or not unpickled in the caller, is still reported: as a
:class:`RemoteError` naming the original type and message. Its message travels once, in the
exception, not again in the traceback text.
"""

from __future__ import annotations

import pickle
import struct
import traceback

from ._errors import RemoteError, RemoteTraceback
from ._picklers import exception_dumps

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
        exc_bytes = exception_dumps(exc)
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
        return _bare_traceback(exc)


def _bare_traceback(exc: BaseException) -> str:
    """The traceback without its source lines, which formatting may fail to read: a job that
    took every descriptor leaves none to open a source file, nor to import ``tokenize``, which
    ``linecache`` imports on first use since Python 3.13 (its OSError escaped, and the worker
    died with the next job's future blamed)."""
    try:
        lines = ["Traceback (most recent call last):\n"]
        for frame, lineno in traceback.walk_tb(exc.__traceback__):
            code = frame.f_code
            lines.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}\n')
        message = _cut(_safe_str(exc), "in the exception itself")
        lines.append(f"{type(exc).__qualname__}: {message}\n")
        return "".join(lines)
    except Exception:
        return f"{type(exc).__qualname__} (its traceback could not be formatted)\n"


def _cut(text: str, where_the_rest_is: str) -> str:
    if len(text) <= MESSAGE_IN_FULL:
        return text
    rest = len(text) - MESSAGE_IN_FULL
    return f"{text[:MESSAGE_IN_FULL]}... [{rest:,} more characters, {where_the_rest_is}]"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<exception str() failed>"
