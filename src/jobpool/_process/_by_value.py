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
from typing import Any, Callable, Optional

from .._main_globals import MISSING, code_global_names
from .._main_globals import is_stable as _stable

CACHE_SIZE = 256


class ByValueCache:
    def __init__(self) -> None:
        self._entries: dict[Callable[..., Any], tuple[tuple[Any, ...], bytes]] = {}
        self._names: dict[types.CodeType, tuple[str, ...]] = {}

    def get(self, fn: types.FunctionType) -> Optional[bytes]:
        """The bytes remembered for ``fn``, if nothing they depend on has changed."""
        entry = self._entries.get(fn)
        if entry is None:
            return None
        snapshot, data = entry
        # The same objects as when it was cacheable: immutable ones cannot have changed since.
        if self._snapshot(fn) != snapshot:
            del self._entries[fn]
            return None
        return data

    def remember(self, fn: types.FunctionType, data: bytes) -> None:
        snapshot = self._snapshot(fn)
        if snapshot is None or not all(_stable(value) for value in _captured(snapshot)):
            return
        if len(self._entries) >= CACHE_SIZE:
            self._entries.clear()
            self._names.clear()
        self._entries[fn] = (snapshot, data)

    def _snapshot(self, fn: types.FunctionType) -> Optional[tuple[Any, ...]]:
        """What the pickle of ``fn`` is made from, objects wrapped to compare by identity."""
        if fn.__closure__ is not None or fn.__dict__:
            return None
        code = fn.__code__
        names = self._names.get(code)
        if names is None:
            names = self._names[code] = tuple(sorted(code_global_names(code)))
        namespace = fn.__globals__
        return (
            _Same(code),
            len(sys.modules),
            fn.__name__,
            fn.__qualname__,
            fn.__module__,
            fn.__doc__,
            tuple(_Same(namespace.get(name, MISSING)) for name in names),
            tuple(_Same(value) for value in fn.__defaults__ or ()),
            tuple((name, _Same(value)) for name, value in (fn.__kwdefaults__ or {}).items()),
            tuple((name, _Same(value)) for name, value in fn.__annotations__.items()),
        )


def _captured(snapshot: tuple[Any, ...]) -> list[Any]:
    """The values in a snapshot that go into the pickle (globals, defaults, annotations)."""
    values, defaults, kwdefaults, annotations = snapshot[6:]
    return [
        *(same.value for same in values),
        *(same.value for same in defaults),
        *(same.value for _, same in kwdefaults),
        *(same.value for _, same in annotations),
    ]


class _Same:
    """Compares equal only to a wrapper of the very same object (identity, not ``==``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)
