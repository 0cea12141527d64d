"""The errors jobpool raises, each a subclass of the stdlib error users already catch.

    JobpoolError
    ├── QueueFull                 submit_nowait() found the queue at max_pending
    ├── WorkerCrashedError        the worker running the job died (exit code / signal)
    ├── JobTimeoutError           (also TimeoutError) the job ran past its limit
    ├── JobKilledError            Pool.kill() stopped the job while it ran
    ├── MemoryLimitError          (also MemoryError) the job went over its job_memory_limit
    ├── SerializationError        (also pickle.PicklingError) neither pickle nor cloudpickle could
    │   │                         serialize the job, its result or its exception
    │   └── ResultLoadError       a result came back but cannot be loaded in the caller
    ├── RemoteError               a job raised an exception that could not travel back as itself
    ├── PerWorkerError            a per_worker factory raised: only the job that needed it fails
    ├── DependencyError           a future among the job's arguments failed or was cancelled: the
    │                             job did not run
    ├── InitializerError          (also BrokenExecutor) a worker could not start: the pool is broken
    └── SchedulerLostError        (also BrokenExecutor) Dask: the connection to the scheduler is
                                  lost: the pool is broken

A job's own exception is re-raised with its own type; the worker-side traceback is attached as
its ``__cause__`` (a :class:`RemoteTraceback`), as ``concurrent.futures`` does.
"""

from __future__ import annotations

import pickle
import signal as _signal
from concurrent.futures import BrokenExecutor, CancelledError
from typing import Optional

from ._picklers import travels

__all__ = [
    "DependencyError",
    "InitializerError",
    "JobKilledError",
    "JobTimeoutError",
    "JobpoolError",
    "MemoryLimitError",
    "PerWorkerError",
    "QueueFull",
    "RemoteError",
    "RemoteTraceback",
    "ResultLoadError",
    "SchedulerLostError",
    "SerializationError",
    "WorkerCrashedError",
]


class JobpoolError(Exception):
    """Base class of every error jobpool raises itself."""


class QueueFull(JobpoolError):
    """``submit_nowait`` found ``max_pending`` jobs already waiting; nothing was queued."""


class WorkerCrashedError(JobpoolError):
    """The worker process running this job died before it answered.

    Only the job that worker held fails; the pool starts a replacement and goes on.
    ``exitcode`` is the process exit status, ``signal`` the name of the signal that killed it
    (``"SIGSEGV"``, ``"SIGKILL"``...) or ``None``.
    """

    def __init__(self, pid: Optional[int], exitcode: Optional[int], detail: str = "") -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal_name(exitcode)
        self.detail = detail
        message = f"worker process {pid} {describe_exit(exitcode)} while running this job"
        if detail:
            message += f"; {detail}"
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.pid, self.exitcode, self.detail))


class JobTimeoutError(JobpoolError, TimeoutError):
    """The job ran longer than its time limit (time spent waiting in the queue does not count).

    On the process backend its worker was killed and replaced; on the thread backend the thread
    cannot be stopped and runs on, but the future has failed and a late result is dropped.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"job ran longer than its timeout of {timeout:g} s")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.timeout,))


class JobKilledError(JobpoolError):
    """``Pool.kill(future)`` stopped this job while it was running."""


class MemoryLimitError(JobpoolError, MemoryError):
    """The job's memory (with the programs it started) went over its ``job_memory_limit``.

    The pool stopped the job and every program it started, replaced its worker and went on;
    only this job failed. ``limit`` is the limit in bytes, ``reached`` how much the job had
    reached when it was seen (None where it cannot be told), ``how`` how it was watched.
    """

    def __init__(self, limit: int, reached: Optional[int], how: str) -> None:
        self.limit = limit
        self.reached = reached
        self.how = how
        if reached is None:
            amount = "went over its memory limit"
        else:
            amount = f"reached {_mib(reached)} of memory, at or over its limit"
        super().__init__(
            f"the job {amount} of {_mib(limit)} (job_memory_limit={limit}); {how}. The pool "
            "stopped it with the programs it started and replaced its worker"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.limit, self.reached, self.how))


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class SerializationError(JobpoolError, pickle.PicklingError):
    """Neither pickle nor cloudpickle could serialize part of a job.

    ``path`` names the part that failed, e.g. ``"args[0].conn"``; the message says what it holds
    and how to fix it. Raised by ``submit`` before anything is queued, so the pool stays usable.
    """

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        self.path = path
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.path))


class ResultLoadError(SerializationError):
    """A job's result (or a ``map`` item's) was made and sent back, but cannot be loaded here.

    Its pickle names a class or function that cannot be imported in the caller (a module only
    the worker has), or rebuilding one of its objects raised. ``path`` names the part
    (``"the job's result[2]"``), ``type_name`` the class or function that failed
    (``"workeronly.Thing"``; None when it could not be told) and ``__cause__`` is the exception
    loading raised. In a ``map`` only that item fails.
    """

    def __init__(self, message: str, path: Optional[str] = None, type_name: Optional[str] = None):
        self.type_name = type_name
        super().__init__(message, path)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.path, self.type_name))


class RemoteError(JobpoolError):
    """A job raised an exception that could not be sent back as itself (it failed to pickle).

    ``type_name`` is the qualified name of the original exception class and ``__cause__`` carries
    the worker-side traceback.
    """

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.type_name, str(self).partition(": ")[2]))


class PerWorkerError(JobpoolError):
    """A ``per_worker`` factory raised while a worker built its instance for a job.

    Only that job fails; nothing is kept, so the next job on that worker that uses the handle
    calls the factory again, and the pool goes on. ``factory`` names the factory;
    ``exception`` is what it raised (``None`` if that could not travel back from the worker)
    and ``__cause__`` carries its traceback (on processes and Dask, as the worker-side
    traceback text, like any job's exception).
    """

    def __init__(
        self, message: str, factory: str = "", exception: Optional[BaseException] = None
    ) -> None:
        self.factory = factory
        self.exception = exception
        super().__init__(message)

    @classmethod
    def from_factory(cls, factory: str, owner: str, exc: BaseException) -> PerWorkerError:
        return cls(
            f"the per_worker factory {factory} raised {type(exc).__name__}: {exc} (in {owner}); "
            "this job fails, and the next job there that uses the handle calls the factory again",
            factory,
            exc,
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.factory, _if_it_travels(self.exception)))


class DependencyError(JobpoolError):
    """A future among the job's arguments failed or was cancelled, so the job did not run.

    ``path`` names the argument that held it (``"args[1]"``, ``"kwargs['key']"``,
    ``"args[0][2]"``); ``__cause__`` is that input's own exception (a ``CancelledError`` for
    one that was cancelled, a :class:`JobKilledError` for one that was killed, itself a
    ``DependencyError`` for one that never ran for the same reason). See
    [Pipelines](pipelines.md).
    """

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(message)

    @classmethod
    def of_input(cls, path: str, cause: BaseException, item: bool = False) -> DependencyError:
        """The error of a job whose input at ``path`` ended with ``cause``; ``item``: a ``map``
        item's input."""
        whose = "this map item's" if item else "this job's"
        if isinstance(cause, CancelledError):
            happened = "was cancelled"
        else:
            happened = f"failed with {type(cause).__name__}: {cause}"
        error = cls(f"{whose} input {path} {happened}, so it did not run", path)
        error.__cause__ = cause
        return error

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.path))


def _if_it_travels(exc: Optional[BaseException]) -> Optional[BaseException]:
    """``exc`` if it pickles and unpickles; else None, so that the error carrying it still does."""
    if exc is None or not travels(exc):
        return None
    return exc


class InitializerError(JobpoolError, BrokenExecutor):
    """A worker could not start (its initializer raised, or it died while starting).

    The pool is broken: pending jobs fail with this error and new submissions raise it, instead
    of restarting workers in an endless loop. When the worker could report, ``__cause__`` is
    its own exception (with the worker-side traceback as *its* cause); when it died first, the
    message gives its exit status and the last lines it wrote to stderr.
    """


class SchedulerLostError(JobpoolError, BrokenExecutor):
    """The Dask backend lost its scheduler: the pool is broken (Dask backend only).

    The jobs on the cluster at that moment fail with it (whether each ran is unknown: its
    outcome went with the scheduler), and so do the jobs waiting in the pool's queue and every
    later submission. ``address`` is the scheduler's. Neither a worker crash (the workers may
    well be alive) nor an initializer failure, hence a class of its own.
    """

    def __init__(self, message: str, address: Optional[str] = None) -> None:
        self.address = address
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.address))


BROKEN = "the pool is broken and accepts no more jobs"


def initializer_error(
    cause: BaseException, where: str, *, loading: bool = False, outcome: str = BROKEN
) -> InitializerError:
    """The error for an initializer that raised (or, ``loading``, could not be unpickled)
    ``where`` (e.g. "in worker process 1234"); the same words on every backend."""
    if loading:
        what = f"the pool's initializer could not be loaded {where}"
    else:
        what = f"the pool's initializer raised {where}"
    error = InitializerError(f"{what}: {type(cause).__name__}: {cause}; {outcome}")
    error.__cause__ = cause
    return error


def signal_name(exitcode: Optional[int]) -> Optional[str]:
    """``"SIGKILL"`` for a process killed by that signal (exit code -9), else None."""
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return _signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def describe_exit(exitcode: Optional[int]) -> str:
    """How a process ended, in words: "was killed by SIGSEGV (exit code -11)"."""
    name = signal_name(exitcode)
    if name:
        return f"was killed by {name} (exit code {exitcode})"
    if exitcode is None:
        return "died"
    return f"exited with code {exitcode}"


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised in a worker process."""

    def __init__(self, tb: str) -> None:
        self.tb = tb
        super().__init__(tb)

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'
