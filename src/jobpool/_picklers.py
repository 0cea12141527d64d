"""The two picklers, stdlib pickle first and cloudpickle when it refuses, without a word of advice.

pickle is ~10x faster than cloudpickle on ordinary calls, so it stays the fast path. It refuses
lambdas, closures and locally defined classes in several ways (``PicklingError``, but also
``AttributeError: Can't pickle local object`` and ``TypeError: cannot pickle '_thread.lock'``);
any of those sends the object to cloudpickle, which pickles such things by value. Objects from
``__main__`` pickle "by reference" without complaint but cannot be found again in a spawned or
forkserver worker, so output that names ``__main__`` is redone with cloudpickle as well.

This module only pickles; what a failure means (which part, and the fix) is
``_pickling_advice``'s, and ``_serialization.dumps`` puts the two together. It sits below both
and below the errors, which ask it whether an exception a ``PerWorkerError`` carries can travel.
"""

from __future__ import annotations

import io
import pickle
import threading
from typing import Any, Optional

from ._main_globals import share_main_globals
from ._platform import after_fork_in_child

PROTOCOL = pickle.HIGHEST_PROTOCOL
_PICKLE_REFUSALS = (pickle.PicklingError, AttributeError, TypeError, RecursionError)
_MAIN_MARKER = b"__main__"


def plain_pickle(obj: object) -> Optional[bytes]:
    """The stdlib pickle of ``obj``, or None when it needs cloudpickle.

    None when pickle refuses it, or when the pickle names ``__main__`` (a fresh worker process
    could not find it again). Any other error (an object whose ``__reduce__`` raises) is raised.
    """
    try:
        data = pickle.dumps(obj, PROTOCOL)
    except _PICKLE_REFUSALS:
        return None
    return None if _MAIN_MARKER in data else data


def cloud_dumps(obj: object, to_worker: bool) -> bytes:
    """cloudpickle's ``dumps``, with the script's globals shared when bound for a worker."""
    cloudpickle = load_cloudpickle()
    if not to_worker:
        return cloudpickle.dumps(obj, PROTOCOL)  # type: ignore[no-any-return]
    buffer = io.BytesIO()
    pickler = cloudpickle.Pickler(buffer, PROTOCOL)
    share_main_globals(pickler)
    pickler.dump(obj)
    return buffer.getvalue()


def exception_dumps(exc: BaseException) -> bytes:
    """Pickle an exception as Python itself does for its built-in exception types.

    Libraries may register reducers for every exception class in ``copyreg`` (``distributed``
    installs tblib's at import), and a worker forked from a process that imported one inherits
    them. tblib's reducer rebuilds an exception without calling its ``__init__``, which loses
    what a built-in type keeps outside ``__dict__``: ``SystemExit(1)`` came back with ``code``
    None, ``StopIteration``'s ``value`` and ``UnicodeError``'s fields likewise. For the types
    Python defines, their own ``__reduce_ex__`` is used; registrations for other classes are the
    user's choice and kept. Raises what the pickler raises when neither pickler can take it.
    """
    try:
        data: Optional[bytes] = _dump_with(_pickler_class(pickle.Pickler), exc)
    except _PICKLE_REFUSALS:
        data = None
    if data is None or _MAIN_MARKER in data:
        data = _dump_with(_pickler_class(load_cloudpickle().Pickler), exc)
    return data


def _dump_with(pickler_class: Any, obj: object) -> bytes:
    buffer = io.BytesIO()
    pickler_class(buffer, PROTOCOL).dump(obj)
    return buffer.getvalue()


_FAITHFUL: dict[Any, Any] = {}


def _pickler_class(base: Any) -> Any:
    """``base`` with built-in exceptions reduced by their own ``__reduce_ex__``."""
    cls = _FAITHFUL.get(base)
    if cls is None:

        class Faithful(base):  # type: ignore[misc]
            def reducer_override(self, obj: Any) -> Any:
                kind = type(obj)
                if kind.__module__ == "builtins" and issubclass(kind, BaseException):
                    return obj.__reduce_ex__(PROTOCOL)
                parent = getattr(super(), "reducer_override", None)
                return NotImplemented if parent is None else parent(obj)

        cls = _FAITHFUL[base] = Faithful
    return cls


def is_plain_pickle_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is one of the ways plain pickle refuses what cloudpickle may take."""
    return isinstance(exc, _PICKLE_REFUSALS)


def serializable(obj: object) -> bool:
    """Whether cloudpickle can pickle ``obj`` (to find the part of an object that fails)."""
    try:
        load_cloudpickle().dumps(obj, PROTOCOL)
    except Exception:
        return False
    return True


def travels(obj: object) -> bool:
    """Whether ``obj`` pickles (pickle, else cloudpickle, as a job's parts do) and loads again."""
    try:
        data = plain_pickle(obj)
        if data is None:
            data = cloud_dumps(obj, to_worker=True)
        pickle.loads(data)
    except Exception:
        return False
    return True


# Held around jobpool's own first import of cloudpickle and around each fork of a worker. A
# process forked while another thread is inside an import inherits that module's import lock,
# held by a thread that does not exist in the child, and its own import of the same module
# (a worker unpickling a lambda imports cloudpickle) then waits forever.
IMPORT_FORK_LOCK = threading.Lock()


def _new_import_fork_lock() -> None:
    """In a forked child: the lock was copied held (the parent forks under it), so replace it."""
    global IMPORT_FORK_LOCK
    IMPORT_FORK_LOCK = threading.Lock()


after_fork_in_child(_new_import_fork_lock)


_CLOUDPICKLE: Any = None


def load_cloudpickle() -> Any:
    """Imported on first use: most jobs never need it, and workers start faster without it.

    The module is remembered only once its import has finished, under the lock: a module found
    in ``sys.modules`` may still be half-initialized by another thread (eight threads making
    their first submit at once got ``partially initialized module 'cloudpickle'``), whereas the
    ``import`` statement waits for the thread that is importing it.
    """
    module = _CLOUDPICKLE
    if module is None:
        module = _import_cloudpickle()
    return module


def _import_cloudpickle() -> Any:
    global _CLOUDPICKLE
    with IMPORT_FORK_LOCK:
        import cloudpickle

        _CLOUDPICKLE = cloudpickle
    return cloudpickle
