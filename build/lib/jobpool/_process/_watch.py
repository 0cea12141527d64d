"""FdWatch: the dispatcher's sleep, a map from file descriptor to what to do when it is readable.

It exists for one operation ``selectors`` makes slow: setting a descriptor aside for a moment
and taking it back (``pause``/``resume``), which a thread waiting for its own job's reply does
on every round trip (see ``Dispatcher.read_reply``). With epoll that is one ``epoll_ctl`` each;
``selectors`` adds several microseconds of Python per call around the same system call.
Where epoll does not exist, it falls back to a ``selectors`` selector.
"""

from __future__ import annotations

import select
import selectors
from typing import Callable, Optional

Callback = Optional[Callable[[], None]]


class FdWatch:
    def __init__(self) -> None:
        self._callbacks: dict[int, Callback] = {}
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._selector = None if self._epoll is not None else selectors.DefaultSelector()

    def add(self, fd: int, callback: Callback) -> None:
        self._callbacks[fd] = callback
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLIN)
        else:
            assert self._selector is not None
            self._selector.register(fd, selectors.EVENT_READ)

    def remove(self, fd: int) -> None:
        """Stop watching ``fd``; quietly, if it is not watched (any more)."""
        if self._callbacks.pop(fd, _MISSING) is _MISSING:
            return
        try:
            if self._epoll is not None:
                self._epoll.unregister(fd)
            else:
                assert self._selector is not None
                self._selector.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass

    def pause(self, fd: int) -> bool:
        """Ignore ``fd`` until :meth:`resume`; False if it is not watched."""
        if fd not in self._callbacks:
            return False
        if self._epoll is not None:
            # Unregistered, not modified to no events: epoll reports a hang-up regardless.
            self._epoll.unregister(fd)
        else:
            assert self._selector is not None
            self._selector.unregister(fd)
        return True

    def resume(self, fd: int) -> None:
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLIN)
        else:
            assert self._selector is not None
            self._selector.register(fd, selectors.EVENT_READ)

    def wait(self, timeout: Optional[float]) -> list[Callback]:
        """Sleep until a watched fd is readable (or timeout); the callbacks of the ready ones.

        A callback of None stands for a descriptor added with no callback (the wake-up pipe).
        """
        callbacks = self._callbacks
        if self._epoll is not None:
            ready = self._epoll.poll(-1 if timeout is None else timeout, max(len(callbacks), 1))
        else:
            assert self._selector is not None
            ready = [(key.fd, 0) for key, _ in self._selector.select(timeout)]
        # One lookup per fd: another thread may remove an fd meanwhile (see read_reply).
        found = [callbacks.get(fd, _MISSING) for fd, _ in ready]
        if _MISSING in found:
            return [callback for callback in found if callback is not _MISSING]  # type: ignore[misc]
        return found  # type: ignore[return-value]

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
        else:
            assert self._selector is not None
            self._selector.close()
        self._callbacks.clear()


_MISSING = object()
