"""The contract between the pool and a backend: what every backend does, and what it is given.

The pool owns everything users see (argument checks, the lifecycle, the bounded queue, ``map``
windowing, statistics); a backend only takes jobs from the pool's queue and resolves each one
exactly once through :class:`~jobpool._job.Outcomes`. :class:`Backend` is that contract, checked
by ``mypy --strict`` for every backend (``_thread``, ``_process``, ``_dask``) and honoured by the
in-memory fake backend the tests drive the pool with.

    Pool --submit--> Backend.prepare(job) in the caller's thread (serialize: errors raise here)
         --> Backend.offer(job): straight to an idle worker?  else JobQueue.put + notify()
    Backend: takes jobs from the queue, runs them, Outcomes.succeed/fail/... each once
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Optional

from typing_extensions import Protocol

from ._job import Job, JobFuture, JobQueue, Outcomes

#: What ``prepare_function`` makes of a ``map``'s function, once for all its chunks: its bytes
#: (None where nothing is serialized), the key workers cache it under, and the large values its
#: bytes refer to, each ``(key, value)`` (see ``_process/_blobs``).
PreparedFunction = tuple[Optional[bytes], Optional[int], tuple[tuple[int, Any], ...]]
NOT_SERIALIZED: PreparedFunction = (None, None, ())

#: Reads the reply of a running job in the thread that waits for it (see ``Backend.read_reply``).
ReplyReader = Callable[[JobFuture, Optional[float]], None]


@dataclass(frozen=True)
class BackendSetup:
    """What the pool gives every backend it makes."""

    queue: JobQueue  # the jobs waiting for a worker (the pool's bounded queue)
    outcomes: Outcomes  # the one door through which every job is resolved, once
    workers: int  # jobs running at once, at most
    initializer: Optional[Callable[..., object]]
    initargs: tuple[Any, ...]
    on_broken: Callable[[BaseException], None]  # workers cannot start: the pool breaks


class Backend(Protocol):
    """What a backend does for the pool. Every method but ``prepare``/``prepare_function`` and
    ``offer`` may be called from any thread; those two run in the submitting thread."""

    @property
    def name(self) -> str:
        """``"thread"``, ``"process"``, ``"dask"``."""

    @property
    def kill_limitation(self) -> Optional[str]:
        """Why ``kill()`` cannot stop a job that already runs here, or None if it can."""

    @property
    def read_reply(self) -> Optional[ReplyReader]:
        """What a thread waiting in ``result(timeout)`` for a running job calls, to read its
        reply itself (the process backend); None: the thread waits on the future."""

    @property
    def serializes(self) -> bool:
        """Whether ``prepare`` pickles the job: then a job may not be prepared in just any
        thread (it may be large), and a map chunk's pickle failing is how futures among its
        items are found (see ``_dependencies``)."""

    def prepare(self, job: Job) -> None:
        """Make ``job`` ready to travel (serialize it); raise ``SerializationError`` if not."""

    def prepare_function(self, fn: Callable[..., Any]) -> PreparedFunction:
        """Serialize a ``map``'s function once for all its chunks."""

    def offer(self, job: Job) -> bool:
        """Start ``job`` at once if a worker is idle and nothing waits; False: queue it."""

    def refused(self, job: Job) -> None:
        """The pool refused ``job`` after ``prepare`` (queue full, closed, interrupted): let go
        now of what ``prepare`` holds for it (shared memory), rather than when it is collected."""

    def notify(self) -> None:
        """A job was queued."""

    def kill(self, future: Future[Any]) -> bool:
        """Stop the running job of ``future``; False if it is not running here (any more)."""

    def worker_count(self) -> int:
        """Workers now (``PoolStats.workers``)."""

    def shutdown(self, wait: bool) -> None:
        """Run what is queued, then stop the workers; with ``wait``, return once they are gone."""

    def terminate(self) -> None:
        """Stop now: fail what runs (as ``kill``), stop the workers."""
