"""The only module-level mutable state: the open pools, so interpreter exit can close them.

Like ``concurrent.futures``, a pool left open at exit finishes its queued jobs and stops its
workers before the interpreter goes; the hook runs before threads are joined, so worker threads
and processes never outlive it.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Any, Callable

_open_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_hooked = False


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
    for pool in list(_open_pools):
        pool.shutdown(wait=True)


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
