"""Futures among a job's arguments: finding them, cheaply, and putting their values in place.

What counts as an input: a ``concurrent.futures.Future`` (of any kind: this pool's, another
pool's, any executor's, one the caller made) found in ``args``, in ``kwargs``' values, or inside
``list``, ``tuple``, ``dict`` (values) and ``set``/``frozenset`` found there, up to
:data:`MAX_DEPTH` containers deep. Only those exact types are searched: a subclass (a
``namedtuple``, an ``OrderedDict``) travels as it is, as Dask does. The containers that hold a
future are copied with the values in place; the caller's own are left alone.

Finding no future must cost next to nothing, since every job pays it: a call's arguments are
looked at by type only (:func:`find_inputs`), and containers are walked only when there is one.
A ``map`` chunk is searched only when its pickle fails on the process and Dask backends (a future
never pickles: ``JobFuture`` refuses at once, see ``Intake.enqueue``), so a map there pays
nothing; on threads its items' types are looked at in one C-level pass (about 18 ns per item).

The jobs that wait for their inputs are ``_dependencies``' business; this module only looks.
"""

from __future__ import annotations

import itertools
from concurrent.futures import CancelledError, Future
from typing import Any, Optional

from ._errors import DependencyError
from ._job import Call, Chunk, Job, JobFuture

#: How many containers deep a future is looked for: ``args[0][1][2]`` is three deep.
MAX_DEPTH = 8
# Values that hold no future and pickle quickly.
_SCALARS = frozenset({int, float, complex, bool, str, bytes, type(None)})
_SEARCHED = frozenset({list, tuple, dict, set, frozenset})
# A job is admitted in the thread that resolved its last input only if it is this small: its
# strings and bytes, its containers, and the values it received.
SMALL_BYTES = 64 * 1024
_SMALL_ITEMS = 256

Path = tuple[Any, ...]  # ("args", 0, 2) or ("kwargs", "key"); see describe_path


def describe_path(path: Path) -> str:
    """``("args", 0, 2)`` -> ``"args[0][2]"``; ``("kwargs", "k")`` -> ``"kwargs['k']"``; a step
    into a set reads ``{…}``."""
    root, *steps = path
    return str(root) + "".join("{…}" if isinstance(s, _Member) else f"[{s!r}]" for s in steps)


class _Member:
    """A step into a set, naming the member (hashable: it is one) that holds the future."""

    __slots__ = ("member",)

    def __init__(self, member: Any) -> None:
        self.member = member


class Found:
    """The futures in one job's arguments: where each one is, and whether the rest is small.

    ``places`` lists ``(item, path, future)`` in argument order; ``item`` is the map item's
    index in a chunk (None for a call). ``small``: everything else in the arguments is a short
    string, a number or a small container of those. ``plain``: everything else is a number or
    a string (each pickles, whatever the backend).
    """

    __slots__ = ("_futures", "places", "plain", "small")

    def __init__(self) -> None:
        self.places: list[tuple[Optional[int], Path, Future[Any]]] = []
        self.small = True
        self.plain = True
        self._futures: Optional[list[Future[Any]]] = None

    def futures(self) -> list[Future[Any]]:
        """Each future once, in the order first found."""
        if self._futures is None:
            places = self.places
            if len(places) == 1:
                self._futures = [places[0][2]]
            else:
                self._futures = list({id(f): f for _, _, f in places}.values())
        return self._futures

    def flat(self) -> bool:
        """Whether every future is an argument itself (``args[i]``, ``kwargs[k]``)."""
        return all(len(path) == 2 for _, path, _ in self.places)

    def walk(self, value: Any, item: Optional[int], path: Path) -> None:
        kind = type(value)
        if kind in _SCALARS:
            if (kind is str or kind is bytes) and len(value) > SMALL_BYTES:
                self.small = False
            return
        if isinstance(value, Future):
            self.places.append((item, path, value))
            return
        if kind not in _SEARCHED or len(path) > MAX_DEPTH + 1:  # ("args", 0) is one deep
            self.small = self.plain = False
            return
        if len(value) > _SMALL_ITEMS:
            self.small = False
            if set(map(type, value.values() if kind is dict else value)) <= _SCALARS:
                return  # many plain values, no future among them: one C-level pass
        if kind is dict:
            for key, member in value.items():
                self.walk(member, item, (*path, key))
        elif kind is list or kind is tuple:
            for index, member in enumerate(value):
                self.walk(member, item, (*path, index))
        else:
            for member in value:
                self.walk(member, item, (*path, _Member(member)))


_ARG_PATHS = [("args", index) for index in range(8)]  # shared: most jobs have few arguments


def _may_hold_futures(values: Any) -> bool:
    """Whether any of ``values`` is a future or a container to search (cheap: types only)."""
    for value in values:
        kind = type(value)
        if kind not in _SCALARS and (kind in _SEARCHED or isinstance(value, Future)):
            return True
    return False


def find_inputs(work: Call | Chunk) -> Optional[Found]:
    """The futures among ``work``'s arguments, or None (the usual case, found cheaply)."""
    if type(work) is Call:
        for value in work.args:  # _may_hold_futures, inlined: every job goes through here
            kind = type(value)
            if kind not in _SCALARS and (kind in _SEARCHED or isinstance(value, Future)):
                return _in_call(work)
        if work.kwargs and _may_hold_futures(work.kwargs.values()):
            return _in_call(work)
        return None
    return _in_chunk(work)


def _in_call(work: Call) -> Optional[Found]:
    """The futures in a call that may hold some (a future or a container among its arguments)."""
    found = Found()
    walk = found.walk
    for index, value in enumerate(work.args):
        walk(value, None, _ARG_PATHS[index] if index < 8 else ("args", index))
    if work.kwargs:
        for key, value in work.kwargs.items():
            walk(value, None, ("kwargs", key))
    return found if found.places else None


def _in_chunk(work: Call | Chunk) -> Optional[Found]:
    """The futures in a map chunk's items (their types looked at in one C-level pass first)."""
    assert isinstance(work, Chunk)
    items = work.items
    types = set(map(type, items))
    if types <= _SCALARS:
        return None
    if work.star:  # each item is a tuple of arguments (a list or other iterable is not searched)
        if types == {tuple} and set(map(type, itertools.chain.from_iterable(items))) <= _SCALARS:
            return None
    elif not any(t in _SEARCHED or issubclass(t, Future) for t in types):
        return None
    found = Found()
    for index, item in enumerate(items):
        if not work.star:
            found.walk(item, index, ("args", 0))
        elif type(item) is tuple:
            found.walk(item, index, ("args",))
    return found if found.places else None


# --- putting the values in --------------------------------------------------------------------


def _rebuild(value: Any, trie: Any, values: dict[int, Any]) -> Any:
    """``value`` with the futures the ``trie`` of paths leads to replaced by their values."""
    if isinstance(trie, Future):
        return values[id(trie)]
    kind = type(value)
    if kind is set or kind is frozenset:
        members = set(value)
        for step, below in trie.items():
            members.discard(step.member)
            members.add(_rebuild(step.member, below, values))
        return kind(members)
    copy: Any = dict(value) if kind is dict else list(value)
    for step, below in trie.items():
        copy[step] = _rebuild(value[step], below, values)
    return tuple(copy) if kind is tuple else copy


def _trie(paths: list[tuple[Path, Future[Any]]]) -> dict[Any, Any]:
    """The paths (below their root) as nested dicts, each ending in its future."""
    root: dict[Any, Any] = {}
    for path, future in paths:
        node = root
        for step in path[:-1]:
            node = node.setdefault(step, {})
        node[path[-1]] = future
    return root


def _member_steps(path: Path) -> Path:
    """Set steps are keyed by their member in the trie (equal members are one step)."""
    return tuple(_MemberKey(step.member) if isinstance(step, _Member) else step for step in path)


class _MemberKey:
    """A trie key for a set member: equal to another for the same member."""

    __slots__ = ("member",)

    def __init__(self, member: Any) -> None:
        self.member = member

    def __hash__(self) -> int:
        return hash(("set member", id(self.member)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _MemberKey) and other.member is self.member


def resolved_args(
    args: Any, root: str, places: list[tuple[Path, Future[Any]]], values: dict[int, Any]
) -> Any:
    """``args`` (the tuple of positional arguments, or the kwargs dict) with values in place."""
    mine = [(_member_steps(path[1:]), future) for path, future in places if path[0] == root]
    if not mine:
        return args
    return _rebuild(args, _trie(mine), values)


# concurrent.futures' own states, read directly from the futures whose class is known (a
# state only moves forward, and a finished future's result and exception are set before it).
_FINISHED = "FINISHED"
_CANCELLED = ("CANCELLED", "CANCELLED_AND_NOTIFIED")
_KNOWN = (Future, JobFuture)


def is_done(future: Future[Any]) -> bool:
    if type(future) in _KNOWN:
        state = future._state
        return state == _FINISHED or state in _CANCELLED
    return future.done()


def outcome(future: Future[Any]) -> tuple[bool, Any]:
    """``(True, result)`` or ``(False, exception)`` of a done future."""
    if type(future) in _KNOWN and future._state == _FINISHED:
        error = future._exception
        return (True, future._result) if error is None else (False, error)
    if future.cancelled():
        return False, CancelledError("the input was cancelled")
    error = future.exception(timeout=0)
    if error is not None:
        return False, error
    return True, future.result(timeout=0)


def small_value(future: Future[Any]) -> bool:
    """Whether a done future's result is small enough to pickle in any thread."""
    ok, value = outcome(future)
    kind = type(value)
    if not ok or kind not in _SCALARS:
        return ok
    return not ((kind is str or kind is bytes) and len(value) > SMALL_BYTES)


def put_values(job: Job, found: Found) -> Optional[dict[int, BaseException]]:
    """Put the inputs' values into ``job``'s arguments. For a chunk, the items whose input
    failed are taken out instead, and returned with their errors (None: none failed)."""
    work = job.work
    if type(work) is Call and len(found.places) == 1 and len(found.places[0][1]) == 2:
        # The usual case, quickly: one future, an argument itself (and done: a call whose
        # input failed never gets here).
        _, (root, where), future = found.places[0]
        value = outcome(future)[1]
        if root == "args":
            before, after = work.args[:where], work.args[where + 1 :]
            job.work = Call(work.fn, (*before, value, *after), work.kwargs)
        else:
            job.work = Call(work.fn, work.args, {**work.kwargs, where: value})
        return None
    outcomes = {id(f): outcome(f) for f in found.futures()}
    values = {key: value for key, (ok, value) in outcomes.items() if ok}
    if type(work) is Call:
        if found.flat():  # the futures are arguments themselves
            args: list[Any] = list(work.args)
            kwargs = work.kwargs
            for _, (root, where), future in found.places:
                if root == "args":
                    args[where] = values[id(future)]
                else:
                    if kwargs is work.kwargs:
                        kwargs = dict(kwargs)
                    kwargs[where] = values[id(future)]
            job.work = Call(work.fn, tuple(args), kwargs)
            return None
        paths = [(path, future) for _, path, future in found.places]
        job.work = Call(
            work.fn,
            resolved_args(work.args, "args", paths, values),
            resolved_args(work.kwargs, "kwargs", paths, values),
        )
        return None
    assert isinstance(work, Chunk)
    failures: dict[int, BaseException] = {}
    by_item: dict[int, list[tuple[Path, Future[Any]]]] = {}
    for item, path, future in found.places:
        assert item is not None
        ok, error = outcomes[id(future)]
        if not ok and item not in failures:
            failures[item] = DependencyError.of_input(describe_path(path), error, item=True)
        by_item.setdefault(item, []).append((path, future))
    items = list(work.items)
    for index, item_paths in by_item.items():
        if index not in failures:
            wrapped = items[index] if work.star else (items[index],)
            resolved = resolved_args(wrapped, "args", item_paths, values)
            items[index] = resolved if work.star else resolved[0]
    if failures:
        items = [item for index, item in enumerate(items) if index not in failures]
    job.work = Chunk(work.fn, items, work.star)
    return failures or None


def first_failure(found: Found) -> Optional[tuple[str, BaseException]]:
    """The path and exception of the first input (in argument order) that failed already."""
    for _, path, future in found.places:
        if is_done(future):
            ok, error = outcome(future)
            if not ok:
                return describe_path(path), error
    return None
