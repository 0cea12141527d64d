"""Remember the cloudpickle of a plain function while nothing it captures can have changed.

A function defined in the script being run (``__main__``) or a lambda is pickled *by value* by
cloudpickle: its code plus the current values of the globals it uses. That costs ~25 µs, on
every ``submit``, because a global may have been rebound since; the stdlib pools pay nothing
there because they pickle such a function by name, which only works in some scripts.

This cache keeps the bytes and a snapshot of everything they were made from: the code, the
defaults, the name, the annotations and the value of each global the code names. A snapshot is
taken only when each of those values is immutable or pickled by name (numbers, strings, tuples
of such, importable modules, functions and classes), so comparing identities proves the
pickle would come out the same. Anything else (a closure, a function attribute, a global list
or dict, another ``__main__`` function) is not cached and is pickled at each call, so a changed
function is never sent stale. An import anywhere also drops the snapshot, because cloudpickle
records which submodules are imported.
"""

from __future__ import annotations

import sys
import types
from itertools import chain
from operator import is_
from typing import Any, Callable, Optional

from .._main_globals import MISSING, code_global_names
from .._main_globals import is_stable as _stable

CACHE_SIZE = 256


class ByValueCache:
    """The bytes of each cached function, with what they were made from (see module doc).

    A snapshot is a flat tuple of the objects themselves, compared element by element by
    identity (``map(operator.is_, ...)``, in C): checking one on every ``submit`` costs about a
    microsecond, where comparing wrappers through a Python ``__eq__`` cost five. The count of
    imported modules, an int made anew on each read, is compared by value beside it.
    """

    def __init__(self) -> None:
        self._entries: dict[Callable[..., Any], tuple[int, tuple[Any, ...], bytes]] = {}
        self._names: dict[types.CodeType, tuple[str, ...]] = {}

    def get(self, fn: types.FunctionType) -> Optional[bytes]:
        """The bytes remembered for ``fn``, if nothing they depend on has changed."""
        entry = self._entries.get(fn)
        if entry is None:
            return None
        modules, snapshot, data = entry
        # The same objects as when it was cacheable: immutable ones cannot have changed since.
        now = self._snapshot(fn)
        if (
            modules != len(sys.modules)
            or now is None
            or len(now) != len(snapshot)
            or not all(map(is_, now, snapshot))
        ):
            del self._entries[fn]
            return None
        return data

    def remember(self, fn: types.FunctionType, data: bytes) -> None:
        snapshot = self._snapshot(fn)
        if snapshot is None or not all(
            _stable(value) for value in _captured(fn, self._names[fn.__code__])
        ):
            return
        if len(self._entries) >= CACHE_SIZE:
            self._entries.clear()
            self._names.clear()
        self._entries[fn] = (len(sys.modules), snapshot, data)

    def _snapshot(self, fn: types.FunctionType) -> Optional[tuple[Any, ...]]:
        """What the pickle of ``fn`` is made from, as one flat tuple of objects (the names
        of its keyword defaults and annotations beside their values)."""
        if fn.__closure__ is not None or fn.__dict__:
            return None
        code = fn.__code__
        names = self._names.get(code)
        if names is None:
            names = self._names[code] = tuple(sorted(code_global_names(code)))
        namespace = fn.__globals__
        kwdefaults = fn.__kwdefaults__
        annotations = fn.__annotations__
        return (
            code,
            fn.__name__,
            fn.__qualname__,
            fn.__module__,
            fn.__doc__,
            fn.__defaults__,  # a tuple: the same one holds the same values
            *[namespace.get(name, MISSING) for name in names],  # as many as the code names
            len(kwdefaults) if kwdefaults else 0,
            *(chain.from_iterable(kwdefaults.items()) if kwdefaults else ()),
            len(annotations),
            *chain.from_iterable(annotations.items()),
        )


def _captured(fn: types.FunctionType, names: tuple[str, ...]) -> list[Any]:
    """The values that go into the pickle of ``fn`` besides its code: the globals its code
    names (``names``), its defaults, keyword defaults and annotations."""
    namespace = fn.__globals__
    return [
        *(namespace.get(name, MISSING) for name in names),
        *(fn.__defaults__ or ()),
        *(fn.__kwdefaults__ or {}).values(),
        *fn.__annotations__.values(),
    ]
