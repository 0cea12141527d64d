"""The script's functions share one namespace in each worker, as they do in the script.

Functions and classes of the script being run (``__main__``) travel to workers by value, because
workers never import the script (see ``_process/_start``). cloudpickle gives every function it
unpickles a fresh dict of globals, holding just the globals it uses, so two script functions
would not see each other's module-level state in a worker: the classic initializer pattern

    conn = None
    def init():
        global conn
        conn = connect()
    def job(x):
        return conn.execute(x)

would find ``conn`` still ``None`` in ``job``. Here, every script function sent *to* a worker is
pickled with its globals standing for "the receiver's ``__main__`` namespace"
(:func:`share_main_globals`), so in a worker they all live in one namespace, like the script's
functions in the script.

The values a function uses travel with it, as of its submit, and are written into that namespace
when it arrives (:func:`loads`): a global the script changed between two submits is seen by the
next job. A name that code in the worker assigned itself (the initializer, or a job with
``global``) keeps the worker's value: the worker's own state is never overwritten by the copy the
script had at submit, which is what makes the pattern above work.

Only the direction parent -> worker does this; results and exceptions travel back as plain
cloudpickle values and never write into the script's namespace.
"""

from __future__ import annotations

import pickle
import sys
import threading
import types
from typing import Any, Callable, Optional

_MISSING = object()
# How many script functions globals_of follows from the one it is given.
MAX_FUNCTIONS = 64
# The module and function below, as they appear in a pickle that uses them.
MARKER = b"jobpool._main_globals"


def namespace() -> dict[str, Any]:
    """The receiving process's ``__main__`` namespace (called by unpickling, see the module)."""
    main = sys.modules.get("__main__")
    found = getattr(main, "__dict__", None)
    if isinstance(found, dict):
        return found
    return _FALLBACK


# The namespace where there is no ``__main__`` module; made at import, so that threads asking
# for it at once all get the same one.
_FALLBACK: dict[str, Any] = {"__name__": "__main__"}


class _MainGlobals(dict):  # type: ignore[type-arg]
    """Stands for the script's globals in a pickle; unpickles as the receiver's namespace()."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (namespace, ())


def share_main_globals(pickler: Any) -> None:
    """Have a cloudpickle ``Pickler`` send ``__main__`` functions with shared globals.

    cloudpickle keeps, per pickler, the dict each function's globals become when unpickled
    (``globals_ref``, keyed by the id of the original globals); seeding it for ``__main__``
    makes every script function refer to one :class:`_MainGlobals`.
    """
    main = sys.modules.get("__main__")
    main_dict = getattr(main, "__dict__", None)
    globals_ref = getattr(pickler, "globals_ref", None)
    if isinstance(main_dict, dict) and isinstance(globals_ref, dict):
        globals_ref[id(main_dict)] = _MainGlobals(__name__="__main__")


# What this process last wrote into its namespace for each name, by unpickling (loads), or
# found there when it started (adopt): a name whose value is no longer that object was assigned
# by code running here, and is kept.
_shipped: dict[str, Any] | None = None
_lock = threading.Lock()


def adopt() -> None:
    """Count everything in the namespace now as the script's (a worker calls this at start,
    before its initializer: with fork, the namespace is a copy of the script's)."""
    global _shipped
    _shipped = dict(namespace())


def loads(data: bytes, load: Callable[[bytes], Any] = pickle.loads) -> Any:
    """``load(data)`` for what the parent sent, keeping the names this process assigned."""
    if MARKER not in data:
        return load(data)
    with _lock:
        if _shipped is None:
            adopt()
        space = namespace()
        before = dict(space)
        try:
            return load(data)
        finally:
            _settle(space, before)


def globals_of(fn: Any) -> Optional[dict[str, Any]]:
    """The script's values of the globals ``fn`` uses (and the script functions it calls use),
    as they are in the namespace now; None if ``fn`` is not a script function here.

    Call it right after loading ``fn``: a worker that keeps ``fn`` (a keyed function) puts these
    values back with :func:`restore` before running it again, so the job sees the values of its
    own submit even if another function loaded since brought other ones.
    """
    space = namespace()
    fn = getattr(fn, "__func__", fn)
    if not isinstance(fn, types.FunctionType) or fn.__globals__ is not space:
        return None
    shipped = _shipped if _shipped is not None else {}
    values: dict[str, Any] = {}
    todo = [fn]
    seen: set[int] = set()
    while todo and len(seen) < MAX_FUNCTIONS:
        function = todo.pop()
        if id(function) in seen:
            continue
        seen.add(id(function))
        for name in code_global_names(function.__code__):
            value = space.get(name, _MISSING)
            if value is _MISSING or shipped.get(name, _MISSING) is not value:
                continue  # not there, or assigned by code running here: not the script's
            values[name] = value
            if isinstance(value, types.FunctionType) and value.__globals__ is space:
                todo.append(value)
    return values


def restore(values: dict[str, Any]) -> None:
    """Put back the script's values from :func:`globals_of`, except names assigned here."""
    assert _shipped is not None
    space = namespace()
    with _lock:
        for name, value in values.items():
            current = space.get(name, _MISSING)
            if current is value:
                continue
            if _shipped.get(name, _MISSING) is current:  # still the script's: not assigned here
                space[name] = value
                _shipped[name] = value


def code_global_names(code: types.CodeType) -> set[str]:
    """Every global name ``code`` and the code nested in it may look up (as cloudpickle does)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= code_global_names(const)
    return names


def _settle(space: dict[str, Any], before: dict[str, Any]) -> None:
    assert _shipped is not None
    for name, value in list(space.items()):
        old = before.get(name, _MISSING)
        if value is old:
            continue
        if old is not _MISSING and _shipped.get(name, _MISSING) is not old:
            space[name] = old  # assigned here since it last arrived: the worker's own state
        else:
            _shipped[name] = value
