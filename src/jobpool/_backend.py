"""The contract between the pool and a backend, and where each backend is found.

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

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from typing_extensions import Protocol

from ._job import Job, JobQueue, Outcomes

if TYPE_CHECKING:
    from ._process._blobs import Blob

#: What ``prepare_function`` makes of a ``map``'s function, once for all its chunks: its bytes
#: (None where nothing is serialized), the key workers cache it under, and the large values its
#: bytes refer to (see ``_process/_blobs``).
PreparedFunction = tuple[Optional[bytes], Optional[int], tuple["Blob", ...]]
NOT_SERIALIZED: PreparedFunction = (None, None, ())


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


BackendFactory = Callable[[BackendSetup, Mapping[str, Any]], Backend]


def _thread(setup: BackendSetup, options: Mapping[str, Any]) -> Backend:
    from ._thread import ThreadBackend

    return ThreadBackend(setup)


def _process(setup: BackendSetup, options: Mapping[str, Any]) -> Backend:
    from ._process._backend import ProcessBackend
    from ._process._context import get_context
    from ._process._large_data import large_data

    threshold, writable = options.get("shared_memory", (None, False))
    return ProcessBackend(
        setup,
        get_context(options.get("start_method")),
        options.get("max_jobs_per_worker"),
        large_data(threshold, writable),
    )


def _dask(setup: BackendSetup, options: Mapping[str, Any]) -> Backend:
    from ._dask_loader import load_dask_backend

    return load_dask_backend()(setup, address=options.get("address"), client=options.get("client"))


#: The backends by name. Tests add an in-memory fake here.
FACTORIES: dict[str, BackendFactory] = {"thread": _thread, "process": _process, "dask": _dask}

#: The options only some backends honour; any other backend refuses them.
OPTIONS_FOR = {
    "start_method": ("process",),
    "max_jobs_per_worker": ("process",),
    "address": ("dask",),
    "client": ("dask",),
}


def make_backend(name: str, setup: BackendSetup, options: Mapping[str, Any]) -> Backend:
    """The backend called ``name``; an option it cannot honour is an error, never ignored."""
    for option, value in options.items():
        allowed = OPTIONS_FOR.get(option)  # not listed: every backend takes it
        if allowed is not None and value is not None and name not in allowed:
            names = " or ".join(repr(b) for b in allowed)
            raise ValueError(f"{option}= applies only to backend={names}, not backend={name!r}")
    return FACTORIES[name](setup, options)
