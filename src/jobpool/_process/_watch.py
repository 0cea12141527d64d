"""FdWatch: the dispatcher's sleep, a map from file descriptor to what it stands for.

It exists for one operation ``selectors`` makes slow: setting a descriptor aside for a moment
and taking it back (``pause``/``resume``), which a thread waiting for its own job's reply does
on every round trip (see ``Dispatcher.read_reply``). With epoll that is one ``epoll_ctl`` each;
``selectors`` adds several microseconds of Python per call around the same system call.
Where epoll does not exist (or ``_platform`` turned it off), it falls back to the selector
``selectors.DefaultSelector`` would pick without epoll: kqueue, else poll, else select.

One difference matters there. Another thread registers descriptors while the dispatcher sleeps
(a caller thread giving back the pipe it borrowed, a submitter starting a worker). epoll and
kqueue watch what is registered now, sleep or not; ``poll`` and ``select`` watch what was
registered when the sleep began, so a reply on a pipe given back meanwhile would not wake the
dispatcher, and its job would wait forever. So without epoll, a registration made while another
thread sleeps in :meth:`FdWatch.wait` writes a byte into a pipe of the watch's own, which ends
the sleep; the sleeper then sleeps again, watching everything.
"""

from __future__ import annotations

import os
import select
import selectors
import threading
from typing import Generic, Optional, TypeVar

from .. import _platform

T = TypeVar("T")


class FdWatch(Generic[T]):
    """Maps each watched file descriptor to what it stands for (a value of type ``T``)."""

    def __init__(self) -> None:
        self._values: dict[int, T] = {}
        self._epoll = select.epoll() if _platform.EPOLL else None
        self._selector: Optional[selectors.BaseSelector] = None
        self._sleeping = False  # a thread is in wait() (the selector path only)
        if self._epoll is None:
            self._selector = _platform.selector_type()()
            self._changed_r, self._changed_w = os.pipe()
            os.set_blocking(self._changed_r, False)
            os.set_blocking(self._changed_w, False)
            self._selector.register(self._changed_r, selectors.EVENT_READ)

    def add(self, fd: int, value: T) -> None:
        self._values[fd] = value
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLIN)
        else:
            assert self._selector is not None
            self._selector.register(fd, selectors.EVENT_READ)
            self._changed()

    def _changed(self) -> None:
        """A registration changed: end a sleep that began before it (see the module doc)."""
        if self._sleeping:
            try:
                os.write(self._changed_w, b"x")
            except (BlockingIOError, OSError):  # full: a wake-up is pending already
                pass

    def remove(self, fd: int, value: T) -> None:
        """Stop watching ``fd`` for ``value``; quietly, if it is not watched for it (any more).

        The value is part of the request because fd numbers are reused: once a worker's
        descriptors are closed, the next worker started may get the same numbers, and a late
        removal for the old worker (an event for it in the same batch as its exit) must not
        take away the new worker's registration, whose events would then never be seen.
        """
        if self._values.get(fd, _MISSING) != value:
            return
        del self._values[fd]
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
        if fd not in self._values:
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
            self._changed()

    def wait(self, timeout: Optional[float]) -> list[T]:
        """Sleep until a watched fd is readable (or timeout); the values of the ready ones."""
        values = self._values
        if self._epoll is not None:
            ready = self._epoll.poll(-1 if timeout is None else timeout, max(len(values), 1))
        else:
            assert self._selector is not None
            self._sleeping = True
            try:
                ready = [(key.fd, 0) for key, _ in self._selector.select(timeout)]
            finally:
                self._sleeping = False
            if any(fd == self._changed_r for fd, _ in ready):
                try:
                    while os.read(self._changed_r, 4096):
                        pass
                except BlockingIOError:
                    pass
        # One lookup per fd: another thread may remove an fd meanwhile (see read_reply).
        found = [values.get(fd, _MISSING) for fd, _ in ready]
        if _MISSING in found:
            return [value for value in found if value is not _MISSING]  # type: ignore[misc]
        return found  # type: ignore[return-value]

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
        else:
            assert self._selector is not None
            self._selector.close()
            os.close(self._changed_r)
            os.close(self._changed_w)
        self._values.clear()


_MISSING = object()


class WakePipe:
    """Wakes the dispatcher from its sleep in an :class:`FdWatch` (from any thread).

    ``pending`` is set before the byte is written and cleared after the pipe was drained, so a
    wake-up that races with the drain either leaves a byte in the pipe or finds its job queued
    before the dispatcher looks again. Once closed, a late ``wake`` writes nothing: the fd
    numbers may belong to another file by then.
    """

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.pending = False
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        if not self.pending:
            self.pending = True
            with self._lock:
                if self._closed:  # the dispatcher has exited: nobody to wake
                    return
                try:
                    os.write(self._write_fd, b"x")
                except OSError:
                    pass

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self.pending = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            os.close(self.read_fd)
            os.close(self._write_fd)
