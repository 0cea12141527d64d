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
from typing import Any, Callable

_MISSING = object()
# The module and function below, as they appear in a pickle that uses them.
MARKER = b"jobpool._main_globals"


def namespace() -> dict[str, Any]:
    """The receiving process's ``__main__`` namespace (called by unpickling, see the module)."""
    main = sys.modules.get("__main__")
    found = getattr(main, "__dict__", None)
    if isinstance(found, dict):
        return found
    global _fallback
    if _fallback is None:
        _fallback = {"__name__": "__main__"}
    return _fallback


_fallback: dict[str, Any] | None = None


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
