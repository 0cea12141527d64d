"""A Dask pool's jobs that take its own jobs' futures as arguments: the values stay on the cluster.

    pool.submit(g, pool.submit(f, x))        (both on one Dask pool)
      submit: g's arguments are pickled at once, each future in them a placeholder
              (an unpicklable argument fails here, as for any job); f's result is *wanted*
      f's task ends with OK: its Dask future is *kept* (not released) for the jobs that want it
      f's future resolves --> g's inputs are done (_dependencies) --> g is queued with the
              kept Dask futures as its inputs, to f's worker if it has room
      g's task: Dask hands it f's reply on that worker (moved between workers if need be);
              run_on_worker (_in_worker) loads the values into the placeholders and runs g

So the value never travels back through the caller to reach ``g``: Dask passes it between
workers, and ``g`` needs no round trip to the client before it is sent. The pool still fetches
``f``'s result for ``f``'s own future, as for every job; ``g`` is sent only once that future
has succeeded, so a failed, timed-out or killed ``f`` fails ``g`` with ``DependencyError`` in the
caller, as on every backend, and ``g`` never starts. An input that is not this pool's (another
pool's, any other future), or whose Dask future was not kept (it was done before ``g`` was
submitted), travels as its value, pickled into the same placeholder list.

A kept Dask future is held by the jobs that take it until they are done; Dask keeps the value on
the cluster until then. Should the worker holding it die before ``g`` ran, Dask computes it
again from its task (its lineage): ``f`` then runs a second time, on another worker.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, Optional

from .._job import Job, Serialized
from .._placeholders import dump_arguments
from .._protocol import OK
from .._serialization import dumps


class KeptResults:
    """The Dask futures of this pool's jobs whose results other jobs of the pool want.

    ``want`` (a dependent's submit) and ``take`` (the dependent done waiting) run in any thread;
    ``keep`` in the dispatcher thread as a task's result arrives, before its job's future
    resolves: a want that comes later finds the future done and takes the value instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wanted: dict[Future[Any], int] = {}  # job future -> dependents waiting for it
        self._kept: dict[Future[Any], tuple[Any, str]] = {}  # -> (Dask future, its worker)

    def want(self, future: Future[Any]) -> None:
        with self._lock:
            self._wanted[future] = self._wanted.get(future, 0) + 1

    def keep(self, future: Future[Any], dask_future: Any, address: str) -> bool:
        """Keep ``dask_future`` (which then must not be released) if a job wants ``future``."""
        with self._lock:
            if future not in self._wanted:
                return False
            self._kept[future] = (dask_future, address)
            return True

    def take(self, future: Future[Any]) -> Optional[tuple[Any, str]]:
        """A dependent is done waiting for ``future``: its kept Dask future, if any."""
        with self._lock:
            left = self._wanted.get(future, 0) - 1
            if left > 0:
                self._wanted[future] = left
                return self._kept.get(future)
            self._wanted.pop(future, None)
            return self._kept.pop(future, None)

    # What the pool's jobs waiting for their inputs (_dependencies) ask of the Dask backend.
    @staticmethod
    def prepare(job: Job, futures: list[Future[Any]]) -> None:
        prepare(job, futures)

    @staticmethod
    def inputs_for(futures: list[Future[Any]], kept: dict[int, tuple[Any, str]]) -> ClusterInputs:
        return inputs_for(futures, kept)


class ClusterInputs:
    """What a job sends along with its task: its inputs (kept Dask futures, which Dask replaces
    by their replies on the worker, or ``(OK, pickled value, 0.0)``), and the worker that
    holds the first kept one (the job goes there if it has room)."""

    __slots__ = ("near", "values")

    def __init__(self, values: tuple[Any, ...], near: Optional[str]) -> None:
        self.values = values
        self.near = near


def prepare(job: Job, futures: list[Future[Any]]) -> None:
    """Serialize a job whose arguments hold ``futures``, each as a placeholder (at submit)."""
    serialized = job.serialized
    if serialized is None:
        serialized = job.serialized = Serialized(dumps(job.work.fn, "fn"))
    serialized.body = dump_arguments(job.work, futures)


def inputs_for(futures: list[Future[Any]], kept: dict[int, tuple[Any, str]]) -> ClusterInputs:
    """The inputs of a job whose ``futures`` are done: the kept Dask future of each that has
    one, else its value pickled as a successful reply."""
    values: list[Any] = []
    near: Optional[str] = None
    for future in futures:
        entry = kept.get(id(future))
        if entry is not None:
            values.append(entry[0])
            near = near or entry[1]
        else:
            values.append((OK, dumps(future.result(timeout=0), "an input's value"), 0.0))
    return ClusterInputs(tuple(values), near)
