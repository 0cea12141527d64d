"""Turn jobs, results and exceptions into bytes: stdlib pickle first, cloudpickle when it refuses.

pickle is ~10x faster than cloudpickle on ordinary calls, so it stays the fast path. It refuses
lambdas, closures and locally defined classes in several ways (``PicklingError``, but also
``AttributeError: Can't pickle local object`` and ``TypeError: cannot pickle '_thread.lock'``);
any of those sends the object to cloudpickle, which pickles such things by value. Objects from
``__main__`` pickle "by reference" without complaint but cannot be found again in a spawned or
forkserver worker, so output that names ``__main__`` is redone with cloudpickle as well.

When both refuse, :func:`dumps` raises :class:`SerializationError` naming the first part of the
object that cannot be serialized (``args[0].conn``) and what it holds.
"""

from __future__ import annotations

import io
import pickle
import threading
from typing import TYPE_CHECKING, Any, Optional

from ._errors import SerializationError
from ._job import Call, Chunk
from ._main_globals import share_main_globals
from ._platform import after_fork_in_child

if TYPE_CHECKING:
    from ._job import Job

PROTOCOL = pickle.HIGHEST_PROTOCOL
_PICKLE_REFUSALS = (pickle.PicklingError, AttributeError, TypeError, RecursionError)
_MAIN_MARKER = b"__main__"

loads = pickle.loads


def dumps(obj: object, what: str = "object", *, to_worker: bool = True) -> bytes:
    """Serialize ``obj``; ``what`` names it in the error (``"job"``, ``"result"``...).

    ``to_worker``: it travels to a worker, where functions of the script share one namespace
    (see ``_main_globals``); results and exceptions travel back with ``to_worker=False``.
    """
    data = pickle_plainly(obj, what)
    if data is not None:
        return data
    try:
        return cloud_dumps(obj, to_worker)
    except Exception as exc:
        raise explain_failure(obj, what, exc) from exc


def cloud_dumps(obj: object, to_worker: bool) -> bytes:
    """cloudpickle's ``dumps``, with the script's globals shared when bound for a worker."""
    cloudpickle = _cloudpickle()
    if not to_worker:
        return cloudpickle.dumps(obj, PROTOCOL)  # type: ignore[no-any-return]
    buffer = io.BytesIO()
    pickler = cloudpickle.Pickler(buffer, PROTOCOL)
    share_main_globals(pickler)
    pickler.dump(obj)
    return buffer.getvalue()


def pickle_plainly(obj: object, what: str) -> Optional[bytes]:
    """The stdlib pickle of ``obj``, or None when it needs cloudpickle.

    None when pickle refuses it, or when the pickle names ``__main__`` (a fresh worker process
    could not find it again). Any other error is explained at once (``SerializationError``).
    """
    try:
        data = pickle.dumps(obj, PROTOCOL)
    except _PICKLE_REFUSALS:
        return None
    except Exception as exc:  # an object whose __reduce__ raises something else
        raise explain_failure(obj, what, exc) from exc
    return None if _MAIN_MARKER in data else data


def is_plain_pickle_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is one of the ways plain pickle refuses what cloudpickle may take."""
    return isinstance(exc, _PICKLE_REFUSALS)


def serialize_job(job: Job) -> None:
    """Fill ``job.fn_bytes`` (unless ``map`` already did, once for all its chunks) and ``job.body``.

    Runs in the submitting thread, so an unserializable argument fails at ``submit`` with the
    part named ("args[0].conn"), before anything is queued.
    """
    work = job.work
    try:
        if job.fn_bytes is None:
            job.fn_bytes = dumps(work.fn, "fn")
        if isinstance(work, Call):
            job.body = dumps((work.args, work.kwargs), "job")
        else:
            job.body = dumps((work.items, work.star), "job")
    except SerializationError as exc:
        # Re-locate from the whole job so the path reads "args[0].conn", not "object".
        raise explain_failure(work, "job", exc.__cause__ or exc) from exc.__cause__


def explain_failure(obj: object, what: str, exc: BaseException) -> SerializationError:
    """The error for ``obj`` (named ``what``) failing to serialize with ``exc``, saying what
    happened: a part that pickle refuses (found and named), a part whose own pickling code
    raised, or a process that ran out of memory, which says nothing about the object."""
    if isinstance(exc, MemoryError):  # walking the object to blame a part would only guess
        detail = f": {exc}" if str(exc) else ""
        return SerializationError(
            f"cannot serialize {what}: the process ran out of memory while pickling it "
            f"(MemoryError{detail}). That is not a part that cannot be pickled: give the "
            "process more memory, or return or pass less data at once.",
            path=what,
        )
    from ._pickling_advice import how_to_fix  # per_worker for a method's object, say

    path, leaf = locate_unpicklable(obj, what)
    failure = f"{type(exc).__name__}: {exc}"
    if is_plain_pickle_refusal(exc):
        held = f"holds {_describe(leaf)}" if leaf is not None else "cannot be serialized"
        happened = f"it {held} ({failure})"
    else:  # its own __reduce__ / __getstate__ raised
        happened = f"pickling {_describe(leaf)} raised {failure}"
    return SerializationError(
        f"cannot serialize {path}: {happened}. {how_to_fix(obj, what, path)}", path=path
    )


def _describe(leaf: object) -> str:
    cls = type(leaf)
    module = cls.__module__
    name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    return f"a {name!r} object"


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


def _cloudpickle() -> Any:
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


def _serializable(obj: object) -> bool:
    try:
        _cloudpickle().dumps(obj, PROTOCOL)
    except Exception:
        return False
    return True


def locate_unpicklable(obj: object, path: str, depth: int = 0) -> tuple[str, Optional[object]]:
    """Walk into ``obj`` and return the path and value of the innermost part that fails to pickle.

    Only called after serialization already failed, so its cost never touches the fast path.
    """
    if depth > 20:
        return path, obj
    for child_path, child in _children(obj, path):
        if not _serializable(child):
            return locate_unpicklable(child, child_path, depth + 1)
    return path, obj


def _children(obj: object, path: str) -> list[tuple[str, Any]]:
    if isinstance(obj, Call):
        out: list[tuple[str, Any]] = [("fn", obj.fn)]
        out += [(f"args[{i}]", a) for i, a in enumerate(obj.args)]
        out += [(f"kwargs[{k!r}]", v) for k, v in obj.kwargs.items()]
        return out
    if isinstance(obj, Chunk):
        return [(f"items[{i}]", item) for i, item in enumerate(obj.items)]
    if isinstance(obj, (list, tuple)):
        return [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return [(f"{path}[{k!r}]", v) for k, v in obj.items()]
    if isinstance(obj, (set, frozenset)):
        return [(f"{path}{{{v!r}}}", v) for v in obj]
    parts = getattr(type(obj), "__jobpool_parts__", None)
    if parts is not None:  # a per_worker handle travels as its factory and arguments
        return parts(obj, path)  # type: ignore[no-any-return]
    func = getattr(obj, "__func__", None)
    owner = getattr(obj, "__self__", None)
    if func is not None and owner is not None:  # bound method: its instance is what travels
        return [(f"{path}.__self__", owner)]
    closure = getattr(obj, "__closure__", None)
    if closure:
        names = obj.__code__.co_freevars  # type: ignore[attr-defined]
        cells = []
        for name, cell in zip(names, closure):
            try:
                cells.append((f"{path}.<closure {name}>", cell.cell_contents))
            except ValueError:  # empty cell
                continue
        return cells
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict) and not isinstance(obj, type):
        return [(f"{path}.{k}", v) for k, v in state.items()]
    return []
