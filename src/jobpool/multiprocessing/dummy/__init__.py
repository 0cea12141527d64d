"""``multiprocessing.dummy`` on jobpool: ``from jobpool.multiprocessing.dummy import Pool``.

As in the stdlib, this module offers ``multiprocessing``'s API on threads: its ``Pool`` is a
thread pool, here jobpool's :class:`~jobpool.multiprocessing.ThreadPool` (with ``job_timeout=``
and ``max_pending=``). Every other name (``Process``, ``Queue``, ``Lock``, ``Manager``...) is
the stdlib ``multiprocessing.dummy``'s own, unchanged.
"""

from __future__ import annotations

import multiprocessing.dummy as _stdlib
from collections.abc import Iterable
from typing import Any, Callable, Optional

from ..._mp_pool._pool import ThreadPool

__all__ = [  # noqa: RUF022 - the stdlib's, in its order
    "Process",
    "current_process",
    "active_children",
    "freeze_support",
    "Lock",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Barrier",
    "Queue",
    "Manager",
    "Pipe",
    "Pool",
    "JoinableQueue",
]


def Pool(  # the stdlib's name
    processes: Optional[int] = None,
    initializer: Optional[Callable[..., object]] = None,
    initargs: Iterable[Any] = (),
) -> ThreadPool:
    """``multiprocessing.dummy.Pool``: a :class:`~jobpool.multiprocessing.ThreadPool`."""
    return ThreadPool(processes, initializer, initargs)


def __getattr__(name: str) -> Any:
    """Every other public name is the stdlib ``multiprocessing.dummy``'s."""
    if not name.startswith("_"):
        try:
            return getattr(_stdlib, name)
        except AttributeError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
