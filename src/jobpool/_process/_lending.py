"""A thread waiting for a running job's result reads the worker's reply itself.

The dispatcher thread would read the reply, then wake the waiting thread: two wake-ups where the
worker's write can wake the waiter directly. While a thread waits here, the dispatcher stops
watching that one pipe (it still watches the worker's exit and the job's deadline). If the worker
dies or is killed, the dispatcher handles its exit as always and calls the lease off; the caller
then waits on the future as usual.

A short job's reply is looked for without sleeping first, for at most ``SPIN_SECONDS`` (see
``Lease.wait``): when the worker's recent jobs replied within ``SHORT_JOB_SECONDS``, and a CPU is
left over by the pool's busy and starting workers for the waiting thread to look on. On a
machine of one CPU the worker needs that CPU to reply, and the thread sleeps at once.

It lends only when that is simple: the job runs with nothing waiting behind it, nothing waits in
the pool's line (the dispatcher is awake anyway), and workers are not recycled (recycling starts
processes, which is the dispatcher's job). Otherwise it returns at once and the caller waits on
the future.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

from .. import _lifecycle
from .._job import JobFuture
from ._handle import WorkerHandle
from ._line import JobLine
from ._messages import Messages, Reply
from ._routing import assign_jobs
from ._state import may_lend
from ._watch import FdWatch, WakePipe
from ._workers import PIPE, Event, Workers

# How long a waiting thread looks for a short job's reply before it sleeps: a few times a trivial
# job's round trip, so that it finds one replying at once even on a busy machine, and short
# enough that a job which turns out longer costs the thread little CPU for nothing.
SPIN_SECONDS = 200e-6
# Whose reply is looked for: a worker whose recent jobs (as the parent times them, from the
# job's write to its reply's read) took at most this. Longer than SPIN_SECONDS: a thread that
# slept for a reply saw it later than it came (about 0.1 to 0.3 ms here), and the worker's time
# must not stay too long to look for only because nobody looked.
SHORT_JOB_SECONDS = 1e-3


class ReplyLender:
    def __init__(
        self,
        lock: threading.Lock,
        watch: FdWatch[Event],
        wake: WakePipe,
        workers: Workers,
        line: JobLine,
        messages: Messages,
    ) -> None:
        self._lock = lock
        self._watch = watch
        self._wake = wake
        self._workers = workers
        self._line = line
        self._messages = messages
        self.dispatcher: Optional[threading.Thread] = None  # never lends to that thread
        # Counts the pipes lent; when it moved while the dispatcher slept, a readable event it
        # got may have been read already (see Dispatcher).
        self.lends = 0
        self._owner = _lifecycle.pid

    def read_reply(self, future: JobFuture, timeout: Optional[float]) -> None:
        """Wait for the reply of ``future``'s running job in the calling thread, and settle it."""
        if (
            self._workers.max_jobs is not None
            or self._line.waiting()
            or threading.current_thread() is self.dispatcher
            or _lifecycle.pid != self._owner  # a forked child's copy: the pipes are the parent's
        ):
            return
        with self._lock:
            handle = self._workers.running(future)
            if (
                handle is None
                or not may_lend(handle.state, len(handle.ahead))
                or not self._watch.pause(handle.fd)
            ):
                return
            try:
                lease = handle.lend()
            except OSError:  # no descriptor for its wake-up pipe: wait on the future instead
                self._watch.resume(handle.fd)
                return
            self.lends += 1
            spin = self._spin(handle)
        replies: list[Reply] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                readable = lease.wait(left, spin)
                spin = 0.0  # once: what follows the first message (LOG, say) may take long
                with self._lock:
                    if readable and not handle.exited:
                        replies += self._messages.read(handle)
                    if (
                        not handle.running(future)  # it replied, or it was killed
                        or handle.reader.eof
                        or (left is not None and left <= 0)
                    ):
                        self._return_pipe(handle)
                        break
        finally:
            if lease.active:  # interrupted (KeyboardInterrupt in poll): give the pipe back
                with self._lock:
                    self._return_pipe(handle)
            for reply in replies:  # outside the lock: done-callbacks may use the pool
                self._messages.settle(reply)

    def _spin(self, handle: WorkerHandle) -> float:
        """How long to look for ``handle``'s reply before sleeping (under the lock; see the
        module doc): its recent jobs were short, and a CPU is free of the pool's workers."""
        workers = self._workers
        if (
            handle.job_seconds <= SHORT_JOB_SECONDS
            and len(workers.handles) - workers.idle_count < workers.cpus
        ):
            return SPIN_SECONDS
        return 0.0

    def _return_pipe(self, handle: WorkerHandle) -> None:
        """Give ``handle``'s pipe back to the dispatcher (under the lock)."""
        handle.pipe_returned()
        if handle.exited:
            return
        if handle.reader.eof:
            self._watch.remove(handle.fd, (PIPE, handle))  # its exit fd tells the rest
        else:
            self._watch.resume(handle.fd)
        if handle.idle and handle.too_big and self._workers.recycle_if_due(handle, in_loop=False):
            self._wake.wake()  # the loop starts its replacement
            return
        if handle.idle:
            workers = self._workers
            workers.idle_again()
            if workers.closing or self._line.waiting():
                assign_jobs(workers, self._line)
                self._wake.wake()  # anything else a free worker changes (closing) is the loop's
