"""Load what can be loaded of a pickle that failed to load, and find which part failed and why.

A result a worker pickled may not load in the caller: its class lives in a module only the
worker can import, or the function that rebuilds it raises here. ``pickle.loads`` then fails as
a whole, which would fail every item of a ``map`` chunk for one bad item, and says nothing of
which part failed. :class:`Salvager` loads the same bytes again with the pure-Python unpickler,
every step of which that runs the pickled objects' own code is guarded: finding a class or
function, calling it, setting an object's state, filling a container that is not a builtin one,
hashing keys. A step that raises leaves a :class:`Failed` where its object would be, and so does
a step that needs a :class:`Failed` part; builtin lists, tuples, dicts and sets just hold it.
:func:`find_failed` then finds the first :class:`Failed` in a loaded value, with its path.
Everything else loads as ``pickle.loads`` loads it, and the memo stays in step, so the parts
that do not depend on a failed one are the objects they would have been.

Only called after ``pickle.loads`` failed: nothing here is on a fast path.
"""

from __future__ import annotations

import io
import pickle
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

_MISSING = object()
_BUILTIN_CONTAINERS = (list, dict, set)
#: A loaded value's first failed part and its path (see :func:`find_failed`).
Found = tuple["Failed", str]
FailedIn = Callable[[Any, str], Optional[Found]]


class Failed:
    """Stands where an object could not be loaded: the step that failed, and its exception.

    ``name`` is the class or function the step was about (``"workeronly.Thing"``); ``step``
    says what was being done with it (``"importing workeronly.Thing"``).
    """

    __slots__ = ("error", "name", "step")

    def __init__(self, step: str, name: str, error: BaseException) -> None:
        self.step = step
        self.name = name
        self.error = error

    def __repr__(self) -> str:
        return f"<could not load: {self.step} raised {type(self.error).__name__}: {self.error}>"


def qualified_name(obj: Any) -> str:
    """``module.qualname`` of a class or function (what a pickle names it by)."""
    obj = getattr(obj, "func", obj)  # a functools.partial standing for a rebuild function
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if not isinstance(name, str):
        return type(obj).__qualname__
    return name if module in (None, "builtins") else f"{module}.{name}"


class Salvager(pickle._Unpickler):
    """The pure-Python unpickler with every step that runs the objects' code guarded.

    ``accept``: callables that may be given :class:`Failed` parts (the rebuilders of a map
    chunk's result, which then fail only the items that hold them); any other call with a
    failed part is not made, and fails too.
    """

    accept: tuple[Any, ...] = ()
    if TYPE_CHECKING:  # pickle._Unpickler's own, not in its stubs
        stack: list[Any]
        append: Callable[[Any], None]

        def pop_mark(self) -> list[Any]: ...

    def __init__(self, file: Any, *, buffers: Optional[Iterable[Any]] = None) -> None:
        super().__init__(file, buffers=buffers)
        # Objects that exist but could not be completed (their state, their items): by id, kept
        # alive so that no other object takes their id meanwhile.
        self._marked: dict[int, tuple[Any, Failed]] = {}

    def failed_in(self, value: Any, path: str) -> Optional[Found]:
        """The first failed part of ``value`` (a value this salvager loaded), and its path."""
        return find_failed(value, path, self._marked)

    # --- the guarded steps ----------------------------------------------------------------------

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except Exception as exc:
            return Failed(f"importing {module}.{name}", f"{module}.{name}", exc)

    def get_extension(self, code: int) -> None:
        # Not through pickle's module-wide cache of extensions, which would keep a Failed.
        import copyreg

        key = copyreg._inverted_registry.get(code)  # type: ignore[attr-defined]
        if key is None:
            super().get_extension(code)  # type: ignore[misc]  # raises: unregistered code
        else:
            self.append(self.find_class(*key))

    def _made(
        self, fn: Any, make: Callable[[], Any], parts: tuple[Any, ...], step: str = ""
    ) -> Any:
        """``make()``, or a Failed if ``fn`` or a part is one (unless ``fn`` accepts it), or if
        it raises (``step`` says what it was doing; by default, calling ``fn``)."""
        if not any(fn is accepted for accepted in self.accept):
            failed = self._failed_part(parts)
            if failed is not None:
                return failed
        try:
            return make()
        except Exception as exc:
            name = qualified_name(fn)
            return Failed(step or f"calling {name}", name, exc)

    def _failed_part(self, parts: tuple[Any, ...]) -> Optional[Failed]:
        found = find_failed(parts, "", self._marked)
        return None if found is None else found[0]

    def _mark(self, obj: Any, failed: Failed) -> None:
        self._marked[id(obj)] = (obj, failed)

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        stack[-1] = self._made(func, lambda: func(*args), (func, args))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._made(cls, lambda: cls.__new__(cls, *args), (cls, args)))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        make = lambda: cls.__new__(cls, *args, **kwargs)  # noqa: E731
        self.append(self._made(cls, make, (cls, args, kwargs)))

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        def make() -> Any:
            if args or not isinstance(klass, type) or hasattr(klass, "__getinitargs__"):
                return klass(*args)
            return klass.__new__(klass)  # type: ignore[call-overload]

        self.append(self._made(klass, make, (klass, args)))

    def load_binpersid(self) -> None:
        pid = self.stack.pop()
        try:
            self.append(self.persistent_load(pid))
        except Exception as exc:
            self.append(Failed(f"loading the persistent id {pid!r}", "persistent id", exc))

    def load_build(self) -> None:
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        if type(inst) is Failed:
            return
        failed = self._failed_part((state,))
        if failed is None:
            try:
                _set_state(inst, state)
                return
            except Exception as exc:
                name = qualified_name(type(inst))
                failed = Failed(f"setting the state of a {name!r} object", name, exc)
        self._mark(inst, failed)  # the memo may hold it: later references find it failed too
        stack[-1] = failed

    def _fill(self, target: Any, fill: Callable[[], Any], items: Any) -> None:
        """Add ``items`` to ``target`` with ``fill``; a container of the objects' own that
        would get a failed part, or whose filling raises, is marked failed."""
        if type(target) is Failed:
            return
        if type(target) not in _BUILTIN_CONTAINERS:
            failed = self._failed_part((items,))
            if failed is not None:
                self._mark(target, failed)
                return
        try:
            fill()
        except Exception as exc:
            name = qualified_name(type(target))
            self._mark(target, Failed(f"filling a {name!r} object", name, exc))

    def load_append(self) -> None:
        value = self.stack.pop()
        target = self.stack[-1]
        self._fill(target, lambda: target.append(value), value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]

        def fill() -> None:
            extend = getattr(target, "extend", None)  # pickle's fallback: append() each
            if extend is not None:
                extend(items)
            else:
                for item in items:
                    target.append(item)

        self._fill(target, fill, items)

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        target = self.stack[-1]
        self._fill(target, lambda: target.__setitem__(key, value), (key, value))

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]

        def fill() -> None:
            for i in range(0, len(items), 2):
                target[items[i]] = items[i + 1]

        self._fill(target, fill, items)

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]

        def fill() -> None:
            if isinstance(target, set):
                target.update(items)
            else:
                for item in items:
                    target.add(item)

        self._fill(target, fill, items)

    def load_dict(self) -> None:
        items = self.pop_mark()
        make = lambda: {items[i]: items[i + 1] for i in range(0, len(items), 2)}  # noqa: E731
        self.append(self._made(dict, make, (), "hashing the keys of a dict"))

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        make = lambda: frozenset(items)  # noqa: E731
        self.append(self._made(frozenset, make, (), "hashing the members of a frozenset"))

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(pickle._Unpickler.dispatch)
    for _opcode, _handler in (
        (pickle.REDUCE, load_reduce),
        (pickle.NEWOBJ, load_newobj),
        (pickle.NEWOBJ_EX, load_newobj_ex),
        (pickle.BINPERSID, load_binpersid),
        (pickle.BUILD, load_build),
        (pickle.APPEND, load_append),
        (pickle.APPENDS, load_appends),
        (pickle.SETITEM, load_setitem),
        (pickle.SETITEMS, load_setitems),
        (pickle.ADDITEMS, load_additems),
        (pickle.DICT, load_dict),
        (pickle.FROZENSET, load_frozenset),
    ):
        dispatch[_opcode[0]] = _handler
    del _opcode, _handler


def _set_state(inst: Any, state: Any) -> None:
    """What pickle's BUILD does with an object's state."""
    setstate: Any = getattr(inst, "__setstate__", _MISSING)
    if setstate is not _MISSING:
        setstate(state)
        return
    slotstate = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slotstate = state
    if state:
        inst_dict = inst.__dict__
        for key, value in state.items():
            inst_dict[sys.intern(key) if type(key) is str else key] = value
    if slotstate:
        for key, value in slotstate.items():
            setattr(inst, key, value)


def salvage(data: bytes, accept: tuple[Any, ...] = ()) -> tuple[Any, FailedIn]:
    """Load ``data`` with a :class:`Salvager`: the value, and how to find its failed parts."""
    salvager = Salvager(io.BytesIO(data))
    salvager.accept = accept
    return salvager.load(), salvager.failed_in


def find_failed(
    value: Any, path: str, marked: Optional[dict[int, tuple[Any, Failed]]] = None
) -> Optional[Found]:
    """The first :class:`Failed` in ``value``, looking through builtin containers, with its
    path below ``path`` (``"the job's result[2]['x']"``); None if every part loaded."""
    marked = marked or {}
    todo: list[tuple[Any, Any]] = [(value, None)]
    seen: set[int] = set()
    while todo:
        part, where = todo.pop()
        if type(part) is Failed:
            return part, path + _path(where)
        found = marked.get(id(part))
        if found is not None and found[0] is part:
            return found[1], path + _path(where)
        kind = type(part)
        if kind not in (list, tuple, dict, set, frozenset) or id(part) in seen:
            continue
        seen.add(id(part))
        if kind is dict:
            for key, item in reversed(list(part.items())):
                todo.append((item, (where, _ITEM, key)))
                todo.append((key, (where, _KEY, key)))
        elif kind is list or kind is tuple:
            todo.extend((item, (where, _ITEM, i)) for i, item in reversed(list(enumerate(part))))
        else:
            todo.extend((item, (where, _MEMBER, item)) for item in part)
    return None


_ITEM, _KEY, _MEMBER = "[{!r}]", " (the key {!r})", "{{{!r}}}"


def _path(where: Any) -> str:
    """``(parent, form, key)`` links, innermost first, as ``[2]['x']`` (outermost first)."""
    steps: list[str] = []
    while where is not None:
        where, form, key = where
        try:
            steps.append(form.format(key))
        except Exception:  # a key whose repr() fails
            steps.append(form.format(f"<{type(key).__name__}>"))
    return "".join(reversed(steps))
