"""The script's globals in a worker: one namespace, the worker's own state kept, the script's
changes seen.

Functions and classes of the script being run (``__main__``) travel to workers by value, because
workers never import the script (see ``_process/_start``). cloudpickle gives every function it
unpickles a fresh dict of globals, so two script functions would not see each other's
module-level state in a worker. Here every script function sent *to* a worker is pickled with its
globals standing for "the receiver's ``__main__`` namespace" (:func:`share_main_globals`), so in
a worker they all live in one namespace, like the script's functions in the script.

The globals a function uses travel with it, and the worker decides name by name whether to write
the copy it received into that namespace (:func:`settle`). The rule, which is what users of the
stdlib pools expect from per-worker state (an initializer fills a module-level dict, or sets a
name with ``global``, and later jobs read it):

    A worker keeps what it has for a name (mutated or rebound by its initializer or jobs) unless
    the script's value changed since the worker last received it; then the script's new value
    is written, as it was at that submit.

To tell whether the script's value changed, each global travels with something to compare:

- an immutable value (numbers, strings, tuples of such up to :data:`MAX_ITEMS_WALKED` items) or
  one pickled by name (modules, importable functions and classes) travels as itself, compared by
  type and equality;
- any other value (a dict, a list, an instance) travels as its own pickle, whose bytes are
  compared (and which is unpickled only when they differ); one whose pickle is larger than
  :data:`MAX_COMPARED_BYTES`, or that pickles only with the sending pickler's own machinery,
  travels inline and is written whenever a copy arrives, unless code in the worker rebound the
  name;
- the script's own functions and classes travel inline and are written whenever they arrive,
  unless code in the worker rebound the name (so a redefined function is seen).

A worker forked from the script starts with the script's values: those count as received, a
mutable one with the pickle the script last sent of that very object (:func:`adopt`).

Only the direction parent -> worker does this; results and exceptions travel back as plain
cloudpickle values and never write into the script's namespace, and a pickle unpickled in the
very process that made it (``advise`` does that) writes nothing either.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import sys
import threading
import types
from typing import Any, Callable, Optional

from ._platform import after_fork_in_child

MISSING = object()  # a name not there (is_stable counts it as stable)
# The module, as it appears in a pickle that uses it.
MARKER = b"jobpool._main_globals"
#: A global whose pickle is larger than this travels inline (see the module docstring).
MAX_COMPARED_BYTES = 64 * 1024
#: A tuple or frozenset with more items than this is compared by its pickle, not item by item.
MAX_ITEMS_WALKED = 64
PROTOCOL = pickle.HIGHEST_PROTOCOL

# How a global travels (see the module docstring): compared as itself, compared by its pickle's
# bytes, or not compared (written unless rebound in the worker).
EQUAL = 0
BYTES = 1
WRITTEN = 2

Entry = tuple[str, int, Any]  # (name, how it travels, value or pickle)

_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), range, type(Ellipsis))


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


# --- the sending side ---------------------------------------------------------------------------


def _new_origin() -> bytes:
    return os.urandom(8)


# This process, as the pickles it makes name it: a pickle settles nothing where it was made.
_origin = _new_origin()
# For each name: the object this process last sent as a pickle of its own, and those bytes.
_sent: dict[str, tuple[Any, bytes]] = {}


def share_main_globals(pickler: Any) -> None:
    """Have a cloudpickle ``Pickler`` send ``__main__`` functions with shared globals.

    cloudpickle keeps, per pickler, the dict each function's globals become when unpickled
    (``globals_ref``, keyed by the id of the original globals); seeding it for ``__main__``
    makes every script function refer to one :class:`_MainGlobals`. Its reduction of a dynamic
    function is wrapped so that the function's globals travel as entries :func:`settle` sorts.
    """
    main = sys.modules.get("__main__")
    main_dict = getattr(main, "__dict__", None)
    globals_ref = getattr(pickler, "globals_ref", None)
    if isinstance(main_dict, dict) and isinstance(globals_ref, dict):
        globals_ref[id(main_dict)] = _MainGlobals(__name__="__main__")
        original = getattr(pickler, "_dynamic_function_reduce", None)
        if original is not None:
            pickler._dynamic_function_reduce = functools.partial(
                _reduce_script_function, pickler, main_dict, original
            )


def _reduce_script_function(
    pickler: Any, main_dict: dict[str, Any], original: Callable[[Any], Any], func: Any
) -> Any:
    reduced = original(func)
    if func.__globals__ is not main_dict or len(reduced) != 6:
        return reduced
    make, newargs, state, items, dict_items, _ = reduced
    func_state, slotstate = state
    script_globals = slotstate.get("__globals__")
    if script_globals is None:
        return reduced
    # Every script function names the same state setter (one reference in the pickle, not two).
    # The globals stay one dict, as cloudpickle sends them, each value replaced by what travels
    # (see _entry); one byte per name says how it travels: few objects more to pickle.
    hows = bytearray()
    for name, value in script_globals.items():
        how, script_globals[name] = _entry(pickler, name, value)
        hows.append(how)
    state = (func_state, slotstate, _origin, bytes(hows))
    return (make, newargs, state, items, dict_items, _set_function_state)


def _entry(pickler: Any, name: str, value: Any) -> tuple[int, Any]:
    """How ``value`` travels (EQUAL, BYTES or WRITTEN), and what travels for it."""
    if _comparable_as_itself(value):
        return EQUAL, value
    if not isinstance(value, (types.FunctionType, type)):
        data = _own_pickle(pickler, value)
        if data is not None:
            _sent[name] = (value, data)
            return BYTES, data
    return WRITTEN, value


class _TooLarge(Exception):
    pass


class _Limited(io.BytesIO):
    """A buffer that refuses to grow past :data:`MAX_COMPARED_BYTES` (pickling stops early)."""

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > MAX_COMPARED_BYTES:
            raise _TooLarge
        return super().write(data)


def _own_pickle(pickler: Any, value: Any) -> Optional[bytes]:
    """``value``'s pickle on its own, with the sending pickler's reducers; None if it is
    larger than :data:`MAX_COMPARED_BYTES` or does not pickle so (it then travels inline)."""
    dispatch = getattr(pickler, "dispatch_table", None)
    buffer = _Limited()
    try:
        plain = pickle.Pickler(buffer, PROTOCOL)
        if dispatch is not None:
            plain.dispatch_table = dispatch
        plain.dump(value)
        data = buffer.getvalue()
        if b"__main__" not in data:
            return data
    except _TooLarge:
        return None
    except Exception:  # refused by pickle (a lambda inside, say): cloudpickle's turn
        pass
    buffer = _Limited()
    try:
        import cloudpickle

        # The sender's own class: cloudpickle's picklers take their reducers from their class
        # (one set on an instance is never consulted, see _start._setup_pickler).
        kind = type(pickler) if isinstance(pickler, cloudpickle.Pickler) else cloudpickle.Pickler
        nested = kind(buffer, PROTOCOL)
        share_main_globals(nested)
        nested.dump(value)
    except Exception:
        return None
    return buffer.getvalue()


def _comparable_as_itself(value: Any) -> bool:
    """Stable, and cheap to check so: a long tuple is compared by its pickle instead (made in C,
    where walking its items in Python on every submit would cost more than pickling it)."""
    if type(value) in (tuple, frozenset) and len(value) > MAX_ITEMS_WALKED:
        return False
    return is_stable(value)


def is_stable(value: Any, depth: int = 0) -> bool:
    """Whether the same object always pickles the same: immutable, or pickled by name."""
    if value is MISSING or type(value) in _IMMUTABLE:
        return True
    if type(value) in (tuple, frozenset):
        return depth < 4 and all(is_stable(item, depth + 1) for item in value)
    if isinstance(value, types.ModuleType):
        name = value.__name__
        return name != "__main__" and sys.modules.get(name) is value
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type)):
        return importable(value)
    return False


def importable(value: Any) -> bool:
    """Whether cloudpickle pickles ``value`` by name: found under its module and name."""
    module_name = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if not isinstance(module_name, str) or not isinstance(qualname, str):
        return False
    if module_name == "__main__" or "<locals>" in qualname or "<lambda>" in qualname:
        return False
    found: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, MISSING)
    return found is value


def code_global_names(code: types.CodeType) -> set[str]:
    """Every global name ``code`` and the code nested in it may look up (as cloudpickle does)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= code_global_names(const)
    return names


# --- the receiving side -------------------------------------------------------------------------

# For each name: what was last received, as (EQUAL, the value) or (BYTES, its pickle); and the
# object last written into the namespace by settle() (or found there by adopt()).
_received: dict[str, tuple[int, Any]] = {}
_written: dict[str, Any] = {}
_lock = threading.RLock()  # settling a pickle may unpickle another that settles
_collecting = threading.local()


def _reset_after_fork() -> None:
    global _origin, _lock
    _origin = _new_origin()
    _lock = threading.RLock()


after_fork_in_child(_reset_after_fork)


# True in a fork server that adopted its namespace for the workers it forks (adopt_for_forks):
# what a worker would find there at its start is what the server found.
adopted_for_forks = False


def adopt() -> None:
    """A worker calls this at start, before its initializer: what its namespace holds now counts
    as received from the script (with fork it is a copy of the script's; a mutable value counts
    with the pickle the script last sent of that object, if it sent one).

    jobpool's fork server calls it once for all its workers (``adopted_for_forks``): each would
    otherwise spend about 0.25 ms of CPU at its start walking the same names.
    """
    global adopted_for_forks
    if adopted_for_forks:  # by the fork server this worker was forked from
        adopted_for_forks = False  # not for a process this one forks: it adopts its own
        return
    _adopt()


def adopt_for_forks() -> None:
    """A fork server adopts its namespace once for every worker it forks (see adopt)."""
    global adopted_for_forks
    _adopt()
    adopted_for_forks = True


def _adopt() -> None:
    space = namespace()
    with _lock:
        _written.clear()
        _written.update(space)
        _received.clear()
        for name, value in space.items():
            if _comparable_as_itself(value):
                _received[name] = (EQUAL, value)
                continue
            sent = _sent.get(name)
            if sent is not None and sent[0] is value:
                _received[name] = (BYTES, sent[1])


def loads(data: bytes, load: Callable[[bytes], Any] = pickle.loads) -> Any:
    """``load(data)`` for what the parent sent (script globals settle as it unpickles)."""
    return load(data)


def _set_function_state(func: Any, state: tuple[Any, ...]) -> None:
    """Unpickling a script function: settle its globals, then cloudpickle's own state setter."""
    func_state, slotstate, origin, hows = state
    script_globals = slotstate["__globals__"]
    if origin != _origin and hows:
        settle(
            tuple((name, how, value) for (name, value), how in zip(script_globals.items(), hows))
        )
    slotstate["__globals__"] = {}
    _cloudpickle_setstate()(func, (func_state, slotstate))


@functools.cache
def _cloudpickle_setstate() -> Callable[[Any, Any], None]:
    import cloudpickle

    setstate = getattr(cloudpickle.cloudpickle, "_function_setstate", None)
    if setstate is None:  # cloudpickle 2.x
        from cloudpickle import cloudpickle_fast

        setstate = cloudpickle_fast._function_setstate
    return setstate  # type: ignore[no-any-return]


def settle(entries: tuple[Entry, ...]) -> None:
    """Write the script's globals that changed into this process's namespace (module doc)."""
    with _lock:
        collected = getattr(_collecting, "entries", None)
        if collected is not None:
            collected.extend(entries)
        space = namespace()
        for name, how, payload in entries:
            _arrive(space, name, how, payload)


def _arrive(space: dict[str, Any], name: str, how: int, payload: Any) -> None:
    current = space.get(name, MISSING)
    if how == WRITTEN:
        if current is not MISSING and _written.get(name, MISSING) is not current:
            return  # assigned by code running here: the worker's own
        value = payload
        _received.pop(name, None)
    else:
        known = _received.get(name)
        if current is not MISSING and known is not None and _same(how, payload, known):
            return  # the script's value is what this worker last received: keep the worker's
        value = pickle.loads(payload) if how == BYTES else payload
        _received[name] = (how, payload)
    space[name] = value
    _written[name] = value


def _same(how: int, payload: Any, known: tuple[int, Any]) -> bool:
    if known[0] != how:
        return False
    return bool(payload == known[1]) if how == BYTES else _equal(payload, known[1])


def _equal(a: Any, b: Any, depth: int = 0) -> bool:
    """Equal values of the same types all the way down (``1`` is not ``True`` here)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(_equal(x, y, depth + 1) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:
        return False


class collecting:
    """Collect the entries settled in this thread while the block runs (a worker keeps them
    with a function it keeps unpickled, and settles them again before each rerun)."""

    def __enter__(self) -> list[Entry]:
        self.entries: list[Entry] = []
        self._outer = getattr(_collecting, "entries", None)
        _collecting.entries = self.entries
        return self.entries

    def __exit__(self, *exc_info: object) -> None:
        _collecting.entries = self._outer
