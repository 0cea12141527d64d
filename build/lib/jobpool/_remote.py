"""Carry an exception from a worker process to the caller, with its type and its traceback.

The worker pickles the exception together with its formatted traceback; the parent re-raises the
original type with the traceback attached as ``__cause__`` (as ``concurrent.futures`` does). An
exception that cannot be pickled, or not unpickled in the parent, is still reported: as a
:class:`RemoteError` naming the original type and message.
"""

from __future__ import annotations

import pickle
import traceback

from ._errors import RemoteError, RemoteTraceback
from ._serialization import dumps


def pack_exception(exc: BaseException) -> bytes:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    type_name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        exc_bytes = dumps(exc, "exception")
        pickle.loads(exc_bytes)  # some exceptions pickle but cannot be rebuilt (bad __init__)
    except Exception:
        exc_bytes = b""
    return pickle.dumps((exc_bytes, tb, type_name, _safe_str(exc)), pickle.HIGHEST_PROTOCOL)


def unpack_exception(data: bytes) -> BaseException:
    exc_bytes, tb, type_name, message = pickle.loads(data)
    exc: BaseException
    try:
        if not exc_bytes:
            raise ValueError("not picklable")
        exc = pickle.loads(exc_bytes)
    except Exception:
        exc = RemoteError(type_name, message)
    exc.__cause__ = RemoteTraceback(tb)
    return exc


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<exception str() failed>"
