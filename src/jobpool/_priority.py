"""The pool's queue in priority order, for pools that were given a job with a priority.

``pool.options(priority=n)`` gives jobs a priority (an int, higher first, 0 by default). The
pool's :class:`~jobpool._job.JobQueue` starts as a plain FIFO (a ``queue.SimpleQueue``, the
fastest queue CPython has), and most pools never leave it. The first job with a priority other
than 0 moves the queue, for good, onto a :class:`RankedQueue`: a heap ordered by priority, then
by arrival, so jobs of one priority keep their order. Its ``put`` and ``get`` are O(log n), under
one lock; the FIFO's per-job cost is left as it was for every pool that uses no priorities.

The move happens under the jobs already queued: they go onto the heap in their order (priority 0
each), then any job put on the FIFO in that instant is moved too, by whoever put it
(:meth:`RankedQueue.take_from`). A thread blocked on the FIFO (a thread backend's worker) is
woken by :data:`SWITCHED`, which every thread that gets it puts back for the next one: from then
on every thread waits on the heap.
"""

from __future__ import annotations

import heapq
import itertools
import math
import queue
import threading
from typing import Any, Generic, Optional, Protocol, TypeVar


class Ranked(Protocol):
    """What the queue orders by: a job's priority (``_job.Job``)."""

    @property
    def priority(self) -> int: ...


Job = TypeVar("Job", bound=Ranked)


class _Switched:
    """What a thread blocked on the FIFO receives once the queue moved onto the heap."""

    def __repr__(self) -> str:
        return "<the pool's queue is in priority order now>"


#: Put on the FIFO, among its jobs and stop markers (``None``), once the queue moved. Typed as
#: Any: the FIFO's items are compared with it by identity, on every job's path.
SWITCHED: Any = _Switched()


class RankedQueue(Generic[Job]):
    """Waiting jobs by priority (higher first), then arrival; stop markers (``None``) last."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Optional[Job]]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._jobs = 0  # entries that are jobs, not stop markers

    def put(self, job: Optional[Job]) -> None:
        # Stop markers sort after every job: "finish what is queued, then stop".
        rank = math.inf if job is None else -job.priority
        with self._lock:
            heapq.heappush(self._heap, (rank, next(self._order), job))
            if job is not None:
                self._jobs += 1
            self._ready.notify()

    def get(self) -> Optional[Job]:
        """The first job (or stop marker), waiting for one."""
        with self._lock:
            while not self._heap:
                self._ready.wait()
            return self._pop()

    def get_nowait(self) -> Optional[Job]:
        """The first job (or stop marker); raises ``queue.Empty`` if there is none."""
        with self._lock:
            if not self._heap:
                raise queue.Empty
            return self._pop()

    def _pop(self) -> Optional[Job]:
        job = heapq.heappop(self._heap)[2]
        if job is not None:
            self._jobs -= 1
        return job

    def take_from(self, fifo: queue.SimpleQueue[Optional[Job]]) -> None:
        """Move what the FIFO holds onto the heap, in its order (SWITCHED stays there)."""
        for _ in range(fifo.qsize()):
            try:
                item = fifo.get_nowait()
            except queue.Empty:  # a blocked thread took it first: it hands it on itself
                return
            if item is SWITCHED:
                fifo.put(item)
            else:
                self.put(item)

    def qsize(self) -> int:
        """Jobs waiting (stop markers are not jobs)."""
        return self._jobs

    def drain(self) -> list[Job]:
        """Remove and return every waiting job, in order; stop markers stay."""
        with self._lock:
            entries = sorted(self._heap)
            self._heap = [entry for entry in entries if entry[2] is None]
            self._jobs = 0
        return [job for _, _, job in entries if job is not None]
