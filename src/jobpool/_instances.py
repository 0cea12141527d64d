"""The objects ``per_worker`` handles build: one set per worker, built on first use, closed at exit.

A worker here is whatever runs jobs one after the other and then ends: a worker process (process
backend), a worker thread (thread backend), a Dask worker (one per pool, see
``_dask._per_worker``), or, for a handle called outside any pool, the calling thread itself.
Each owns one :class:`Instances`: the objects it built, by handle token, and how to close each.

Which one a call uses is found in this order, and each step is a plain lookup because it runs on
every call through a handle:

1. the calling thread's own (``_local.instances``): a thread-backend worker thread, a Dask task
   while it runs, the main thread of a worker process, or a thread that used a handle before;
2. the worker process's, for any other thread of a worker process (a thread a job started), so
   that a process builds one instance whatever thread asks;
3. else a new one for the calling thread, closed when that thread ends (or at interpreter exit).

This is module-level state on purpose: an instance belongs to the process or thread that built
it, not to any object a job could hold. A forked child starts with none: what it inherited
belongs to its parent, and closing that (a socket, a database connection) would break the
parent's copy.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, Optional, Protocol

from ._errors import PerWorkerError
from ._platform import after_fork_in_child

_log = logging.getLogger("jobpool")
_MISSING: Any = object()


class Recipe(Protocol):
    """What an instance is built from: ``_per_worker.Recipe`` (a factory and its arguments)."""

    token: bytes  # names the recipe wherever it goes
    factory_name: str  # for messages

    def load(self) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """The factory and its arguments."""


_local = threading.local()
_process: Optional[Instances] = None  # set in a worker process: every thread there shares it


class Instances:
    """The objects one worker built from handles, and how to close each, in build order.

    ``built`` and ``methods`` are read without a lock (a dict lookup on every call through a
    handle). Each
    handle builds under its own lock, so threads that share a worker's instances (threads a job
    started, a Dask worker's task threads) build it once, while a slow factory (a model that
    loads for a minute) holds up no other handle. The locks are reentrant: a factory that ends
    up calling through its own handle gets a RecursionError (a PerWorkerError), not a deadlock.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._pid = os.getpid()
        self.built: dict[bytes, Any] = {}  # recipe token -> the instance jobs use
        self.methods: dict[Any, Callable[..., Any]] = {}  # WorkerMethod -> its bound method
        self._recipes: list[Recipe] = []  # kept, so a worker restores each handle once
        self._closers: list[tuple[str, Callable[[], object]]] = []
        self._building: dict[bytes, threading.RLock] = {}
        self._lock = threading.Lock()  # guards the lists and dicts above

    def get(self, recipe: Recipe) -> Any:
        instance = self.built.get(recipe.token, _MISSING)
        if instance is _MISSING:
            instance = self._build(recipe)
        return instance

    def _build(self, recipe: Recipe) -> Any:
        token = recipe.token
        with self._lock:
            building = self._building.setdefault(token, threading.RLock())
        with building:
            instance = self.built.get(token, _MISSING)
            if instance is not _MISSING:  # another thread built it while we waited
                return instance
            try:
                factory, args, kwargs = recipe.load()
                instance, closer = _opened(factory(*args, **kwargs))
            except Exception as exc:
                raise PerWorkerError.from_factory(recipe.factory_name, self.owner, exc) from exc
            with self._lock:
                if closer is not None:
                    self._closers.append((recipe.factory_name, closer))
                self._recipes.append(recipe)
                self.built[token] = instance
            return instance

    def close(self) -> None:
        """Close what was built, newest first (a later one may use an earlier one); log errors.

        An error while closing one never stops the others, and is never raised: the worker is
        leaving, and nobody waits on it who could handle the error.
        """
        if os.getpid() != self._pid:  # a forked child's copy: its parent's to close
            return
        with self._lock:
            closers, self._closers = self._closers, []
            self.built.clear()
            self.methods.clear()
            self._recipes.clear()
            self._building.clear()
        for name, closer in reversed(closers):
            try:
                closer()
            except Exception:
                _log.warning(
                    "closing the per_worker instance made by %s in %s failed",
                    name,
                    self.owner,
                    exc_info=True,
                )


def _opened(made: Any) -> tuple[Any, Optional[Callable[[], object]]]:
    """The object jobs use, and how to close it at the worker's exit.

    An object with ``close()`` is used as it is and closed. A context manager without one is
    entered now and exited then, as ``with factory() as instance:`` around the worker's life;
    jobs use what ``__enter__`` returned (a ``@contextmanager`` factory yields its resource).
    """
    close = getattr(made, "close", None)
    if callable(close):
        return made, close
    kind = type(made)
    enter = getattr(kind, "__enter__", None)
    leave = getattr(kind, "__exit__", None)
    if enter is None or leave is None:
        return made, None
    return enter(made), lambda: leave(made, None, None, None)


def current() -> Instances:
    """The instances of whoever is calling (see the module docstring for the order)."""
    try:
        return _local.instances  # type: ignore[no-any-return]
    except AttributeError:
        pass
    if _process is not None:
        return _process
    return _for_this_thread()


def _for_this_thread() -> Instances:
    """A thread outside any pool builds its own, closed when the thread ends."""
    thread = threading.current_thread()
    instances = Instances(f"thread {thread.name!r}")
    # The marker lives in this thread's local storage only: it is freed, in this thread, when
    # the thread ends; the finalizer then closes the instances (at interpreter exit otherwise).
    marker = _ThreadEnd()
    weakref.finalize(marker, instances.close)
    _local.instances = instances
    _local.end = marker
    return instances


class _ThreadEnd:
    """Freed when its thread's local storage goes, which triggers the thread's cleanup."""


# --- the hooks the backends call ------------------------------------------------------------


def for_worker_process() -> Instances:
    """Called first thing in a worker process: its instances, shared by all its threads."""
    global _process
    _process = Instances(f"worker process {os.getpid()}")
    _local.instances = _process
    return _process


@contextmanager
def for_worker_thread() -> Iterator[Instances]:
    """Around a thread-backend worker thread's life: its own instances, closed when it ends."""
    instances = Instances(f"worker thread {threading.current_thread().name!r}")
    _local.instances = instances
    try:
        yield instances
    finally:
        del _local.instances
        instances.close()


@contextmanager
def used_by_this_thread(instances: Optional[Instances]) -> Iterator[None]:
    """Make ``instances`` this thread's for a while (a Dask task of a pool); None: no change."""
    if instances is None:
        yield
        return
    previous = getattr(_local, "instances", None)
    _local.instances = instances
    try:
        yield
    finally:
        if previous is None:
            del _local.instances
        else:
            _local.instances = previous


def _forget_inherited() -> None:
    """In a forked child: what the parent built is the parent's (``close`` checks the pid)."""
    global _local, _process
    _local = threading.local()
    _process = None


after_fork_in_child(_forget_inherited)
