"""The fix a ``SerializationError`` suggests, chosen from what failed to pickle.

The commonest case gets its own advice: a bound method whose object holds a connection, a lock
or a socket. Tutorials answer it with a module-level global set by an initializer; jobpool's
answer is ``per_worker``, which keeps the user's ``obj.method`` spelling. Only called once
serialization has failed, so nothing here is on a fast path.
"""

from __future__ import annotations

import types
from typing import Any, Optional

from ._serialization import _children, _describe

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
