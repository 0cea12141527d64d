"""The only module-level mutable state: the open pools, so interpreter exit can close them.

Like ``concurrent.futures``, a pool left open at exit finishes its queued jobs and stops its
workers before the interpreter goes; the hook runs before threads are joined, so worker threads
and processes never outlive it. When the exit comes from an uncaught Ctrl-C, open pools are
terminated instead: waiting jobs are cancelled and worker processes stopped at once.

A pool belongs to the process that created it. In a child forked from that process (a job's
``os.fork()``, the fork start method, the user's own fork) every inherited pool is marked so
(its ``_forked_copy``): it refuses to be used there, and the child's exit, garbage collection
and ``shutdown()`` leave the parent's workers, threads and pipes alone. ``pid`` is this
process's id, kept current across forks, for the cheap "is this still the owner?" question.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import weakref
from typing import Any, Callable

from ._platform import after_fork_in_child

_open_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_hooked = False
pid = os.getpid()  # this process's, updated in a forked child


def _forget_pools_in_child() -> None:
    """A forked child (a fork-started worker, or the user's own fork) does not own the parent's
    pools: it must not use them, nor shut them down at its exit, where their threads do not
    exist and their locks may be held forever."""
    global _lock, pid
    pid = os.getpid()
    _lock = threading.Lock()
    for pool in list(_open_pools):
        try:
            pool._forked_copy()
        except Exception:  # a pool half-made when the fork came: it has nothing to refuse yet
            pass
    _open_pools.clear()


after_fork_in_child(_forget_pools_in_child)


def register(pool: Any) -> None:
    global _hooked
    with _lock:
        _open_pools.add(pool)
        if not _hooked:
            _hooked = True
            register_atexit = getattr(threading, "_register_atexit", None)
            if register_atexit is not None:
                register_atexit(_close_all)
            else:  # pragma: no cover - Python builds without the private hook
                atexit.register(_close_all)


def unregister(pool: Any) -> None:
    with _lock:
        _open_pools.discard(pool)


def _close_all() -> None:
    interrupted = _exiting_on_interrupt()
    for pool in list(_open_pools):
        if interrupted:
            pool.terminate()  # Ctrl-C means stop now, not after the queue has drained
        else:
            pool.shutdown(wait=True)


def _exiting_on_interrupt() -> bool:
    """Whether the interpreter is exiting because of an uncaught KeyboardInterrupt.

    The top level records the uncaught exception in ``sys.last_type`` (``sys.last_exc`` on
    3.12+) before exit hooks run.
    """
    last = getattr(sys, "last_exc", None)
    last_type = type(last) if last is not None else getattr(sys, "last_type", None)
    return isinstance(last_type, type) and issubclass(last_type, KeyboardInterrupt)


def shutdown_in_owner(shutdown: Callable[[bool], None], owner: int) -> None:
    """A pool collected without ``shutdown()``: stop its backend, unless this is a forked
    child's copy of the pool (the workers are the parent's)."""
    if pid == owner:
        shutdown(False)


def weak_callback(callback: Callable[[BaseException], None]) -> Callable[[BaseException], None]:
    """Hold a bound method without keeping its object (the pool) alive.

    The dispatcher thread keeps this backend alive; if it held the pool too, a pool dropped
    without ``shutdown()`` would never be collected and its cluster would never close.
    """
    if getattr(callback, "__self__", None) is None:
        return callback
    ref = weakref.WeakMethod(callback)

    def call(error: BaseException) -> None:
        method = ref()
        if method is not None:
            method(error)

    return call
