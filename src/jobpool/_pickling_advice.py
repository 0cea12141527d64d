"""What a ``SerializationError`` says: the part that failed to pickle, what it holds, the fix.

Only called once serialization has failed, so nothing here is on a fast path.
:func:`locate_unpicklable` walks into the object to the innermost part that fails (a job's
call names its parts ``fn``, ``args[0]``, ``kwargs['x']``; any object can name its own with
``__jobpool_parts__``, as a per_worker handle does), and :func:`how_to_fix` chooses the advice.
The commonest case gets its own: a bound method whose object holds a connection, a lock
or a socket. Tutorials answer it with a module-level global set by an initializer; jobpool's
answer is ``per_worker``, which keeps the user's ``obj.method`` spelling.
"""

from __future__ import annotations

import types
from concurrent.futures import Future
from typing import Any, Optional

from ._errors import SerializationError
from ._picklers import is_plain_pickle_refusal, serializable

GENERAL_FIX = (
    "Pass something picklable instead (e.g. create the resource inside the job, or once per "
    "worker with jobpool.per_worker, or give the class __getstate__/__reduce__), or use "
    "backend='thread', which does not serialize."
)
RECIPE_FIX = (
    "per_worker sends its factory and arguments to each worker, which builds the object there: "
    "pass what the factory needs to build it (a path, a URL, a DSN), not the object itself."
)


def how_to_fix(obj: object, what: str, path: str) -> str:
    """Advice for the failure of ``obj`` (named ``what``) at ``path`` (see locate_unpicklable)."""
    if "<per_worker " in path:
        return RECIPE_FIX
    if what not in ("job", "fn"):
        return GENERAL_FIX
    found = _method_whose_object_fails(obj, what, path)
    if found is None:
        return GENERAL_FIX
    method_path, method = found
    cls = type(method.__self__)
    name = getattr(method, "__name__", "method")
    return (
        f"{method_path} is the method {name!r} of {_describe(method.__self__)}, which cannot "
        f"travel to another process. Build one in each worker instead: "
        f"handle = jobpool.per_worker({cls.__qualname__}, <its arguments>), then pass "
        f"handle.{name}; each worker builds its own {cls.__qualname__} on first use and "
        f"reuses it for every job. Or give {cls.__qualname__} __getstate__/__reduce__, or use "
        "backend='thread', which does not serialize."
    )


def _method_whose_object_fails(obj: object, what: str, path: str) -> Optional[tuple[str, Any]]:
    """The bound method on ``path`` whose ``__self__`` is what failed, and its own path."""
    # A method of a C type (socket.send) has no __func__ to walk into: the path ends at it.
    method_path = path.partition(".__self__")[0]
    method = _part_at(obj, what, method_path)
    owner = getattr(method, "__self__", None)
    if owner is None or isinstance(owner, (types.ModuleType, type)):
        return None
    return method_path, method


def _part_at(obj: object, path: str, target: str) -> Any:
    """The part of ``obj`` named ``target``, found the way locate_unpicklable names parts."""
    while path != target:
        for child_path, child in _children(obj, path):
            rest = target[len(child_path) :]
            if target.startswith(child_path) and (not rest or rest[0] in ".[{"):
                obj, path = child, child_path
                break
        else:
            return None
    return obj


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


def locate_unpicklable(obj: object, path: str, depth: int = 0) -> tuple[str, Optional[object]]:
    """Walk into ``obj`` and return the path and value of the innermost part that fails to pickle.

    Only called after serialization already failed, so its cost never touches the fast path.
    """
    if depth > 20:
        return path, obj
    for child_path, child in _children(obj, path):
        if not serializable(child):
            return locate_unpicklable(child, child_path, depth + 1)
    return path, obj


def _children(obj: object, path: str) -> list[tuple[str, Any]]:
    if isinstance(obj, Future):  # it is what cannot travel: its own parts say nothing
        return []
    if isinstance(obj, (list, tuple)):
        return [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return [(f"{path}[{k!r}]", v) for k, v in obj.items()]
    if isinstance(obj, (set, frozenset)):
        return [(f"{path}{{{v!r}}}", v) for v in obj]
    parts = getattr(type(obj), "__jobpool_parts__", None)
    if parts is not None:  # a job's call or chunk; a per_worker handle (its factory, arguments)
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
