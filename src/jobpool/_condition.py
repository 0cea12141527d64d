"""A lighter ``threading.Condition`` for futures: every job creates one, most never wait on it.

``concurrent.futures.Future`` builds a ``threading.Condition`` per future. That is a Python
object with a ``__dict__``, five bound methods and a deque: about ten objects the garbage
collector tracks, created for each job. With thousands of jobs in flight that allocation, and
the collections it triggers, costs more per job than the job's own bookkeeping.
:class:`FutureCondition` gives a future exactly what ``concurrent.futures`` uses of its
condition (``with``, ``acquire``, ``release``, ``wait``, ``notify_all``) in one slotted object
that is a reentrant lock, and makes its list of waiters only when a thread actually waits.
"""

from __future__ import annotations

import _thread
import threading
from typing import Any, Optional

_allocate_lock = threading.Lock  # the waiter locks, as threading.Condition uses


class FutureCondition(_thread.RLock):  # type: ignore[misc]
    """``threading.Condition`` over an ``RLock``, for one future (see the module docstring).

    It is the reentrant lock itself, so ``with``, ``acquire`` and ``release`` are the lock's own
    C methods: a future takes its condition two or three times per job.
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: Optional[list[Any]] = None

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Release the lock, sleep until notified or ``timeout`` passes, take the lock again."""
        if not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = _allocate_lock()
        waiter.acquire()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        saved = self._release_save()  # type: ignore[attr-defined]
        notified = False
        try:
            if timeout is None:
                notified = waiter.acquire()
            elif timeout > 0:
                notified = waiter.acquire(True, timeout)
            else:
                notified = waiter.acquire(False)
            return notified
        finally:
            self._acquire_restore(saved)  # type: ignore[attr-defined]
            waiters = self._waiters
            if not notified and waiters is not None:  # None: notify_all took the list
                try:
                    waiters.remove(waiter)
                except ValueError:  # notified between the timeout and taking the lock back
                    pass

    def notify_all(self) -> None:
        if not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters, self._waiters = self._waiters, None
        if waiters:
            for waiter in waiters:
                waiter.release()
