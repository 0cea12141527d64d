"""Lease: a worker's pipe lent to the thread that waits for its job's result (see _lending).

The thread sleeps in ``poll`` on the pipe and on a wake-up pipe of the lease's own, so the
dispatcher can call it off when the worker exits. For a reply expected within microseconds it
first polls without sleeping, for at most ``spin`` seconds (see ``wait``). File descriptors are
closed by whoever lets go last: ``WorkerHandle.reap`` leaves them open while a lease is active,
and the thread closes them when it gives the pipe back.
"""

from __future__ import annotations

import math
import os
import select
import time
from typing import Optional


class Lease:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.active = False  # a thread holds the pipe now
        self._wake_r, self._wake_w = os.pipe()  # OSError (out of descriptors): no lease
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._poll.register(self._wake_r, select.POLLIN)
        self._closed = False

    def wait(self, timeout: Optional[float], spin: float = 0.0) -> bool:
        """Sleep until the pipe is readable, the lease is called off, or ``timeout``.

        True when there is something to read. Called by the lending thread without the lock.

        ``spin``: seconds to look without sleeping first. A thread that falls asleep in
        ``poll`` and is woken by the worker's write, on another CPU than the worker's, spends
        more (in the kernel, and in waiting to run again) than a short job's whole reply
        takes: looking for that long costs the thread's own CPU no more, and the reply is read
        as soon as it is there. Each look releases the GIL.
        """
        poll = self._poll.poll
        if spin > 0.0:
            if timeout is not None:
                spin = min(spin, timeout)
            start = time.monotonic()
            while True:
                ready = poll(0)
                if ready:
                    return self.fd in dict(ready)
                looked = time.monotonic() - start
                if looked >= spin:
                    break
            if timeout is not None:
                timeout = max(0.0, timeout - looked)
        milliseconds = None if timeout is None else max(0, math.ceil(timeout * 1000))
        return self.fd in dict(poll(milliseconds))

    def call_off(self) -> None:
        """Wake the thread: the dispatcher is taking the worker's exit over."""
        if not self._closed:
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)
