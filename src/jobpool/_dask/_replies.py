"""What a Dask task's outcome means for its job: the reply settled, or the error that says why not.

A task sends back ``(tag, bytes, seconds)`` (see :func:`._in_worker.run_on_worker`); the job's
own exception travels inside those bytes and is re-raised with its type and the worker's
traceback. Everything else that can happen to a task is Dask's doing (its worker died or left,
its result was lost, Dask could not run it at all) and is turned here into the errors the other
backends raise, with what happened in the message.
"""

from __future__ import annotations

from typing import Optional

from .._errors import (
    BROKEN,
    InitializerError,
    JobpoolError,
    SchedulerLostError,
    WorkerCrashedError,
    initializer_error,
)
from .._job import Job, Outcomes
from .._protocol import INIT_FAILED, OK, RAISED
from .._remote import settle_reply
from .._remote_exceptions import unpack_exception


def settle_task_outcome(
    outcomes: Outcomes, job: Job, tag: int, data: bytes
) -> Optional[InitializerError]:
    """Resolve ``job`` from its worker's reply; the error that breaks the pool, if any."""
    if tag in (OK, RAISED):  # as on the process backend
        settle_reply(outcomes, job, tag == RAISED, data)
    elif tag == INIT_FAILED:
        error = initializer_error_on_dask(data)
        outcomes.fail(job, error)
        return error
    else:  # not an answer of run_on_worker's: someone else's task ran under this key
        outcomes.fail(job, JobpoolError(f"this job's Dask task answered with tag {tag!r}"))
    return None


def initializer_error_on_dask(
    failure: bytes, worker: Optional[str] = None, at_start: bool = False
) -> InitializerError:
    """The pool's initializer failed on a Dask worker (the words are every backend's)."""
    where = f"on Dask worker {worker}" if worker else "on a Dask worker"
    outcome = "no pool was created" if at_start else BROKEN
    return initializer_error(unpack_exception(failure), where, outcome=outcome)


def is_reply(value: object) -> bool:
    """Whether ``value`` has the shape of what :func:`._in_worker.run_on_worker` returns."""
    return (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and isinstance(value[0], int)
        and isinstance(value[1], bytes)
        and isinstance(value[2], (int, float))
    )


def not_a_reply_error(value: object) -> JobpoolError:
    return JobpoolError(
        f"this job's Dask task returned a {type(value).__name__}, not jobpool's reply "
        "(something other than jobpool ran under the task's key)"
    )


def crash_error(dask_error: BaseException) -> WorkerCrashedError:
    """Turn Dask's ``KilledWorker`` into the error the other backends raise for a dead worker."""
    last = getattr(dask_error, "last_worker", None)
    address = getattr(last, "address", last if isinstance(last, str) else None)
    pid = getattr(last, "pid", None)
    failures = getattr(dask_error, "allowed_failures", None)
    error = WorkerCrashedError(pid if isinstance(pid, int) else None, None)
    where = f"Dask worker {address}" if address else "a Dask worker"
    if isinstance(pid, int):
        where += f" (pid {pid})"
    tries = (
        f"; Dask ran it on {failures + 1} worker(s) in all "
        f"(distributed.scheduler.allowed-failures={failures})"
        if isinstance(failures, int)
        else ""
    )
    error.args = (f"{where} died while running this job{tries}",)
    error.__cause__ = dask_error
    return error


def left_error(address: str) -> WorkerCrashedError:
    error = WorkerCrashedError(None, None)
    error.args = (f"Dask worker {address} left the cluster while running this job",)
    return error


def lost_result_error(cause: BaseException) -> WorkerCrashedError:
    error = WorkerCrashedError(None, None)
    error.args = (f"the result of this job could not be fetched from its Dask worker: {cause!r}",)
    error.__cause__ = cause
    return error


def scheduler_lost_error(
    address: str, client_status: str, *, on_cluster: bool
) -> SchedulerLostError:
    """The error of every job the pool held when it lost its scheduler, and of the pool.

    ``client_status`` is the Dask client's: "connecting" while it tries to reconnect (and
    "running" again if it did, to a scheduler that knows nothing of the pool's tasks);
    "closed" once it gave up, or if it was closed under the pool.
    """
    if client_status in ("closing", "closed"):
        what = (
            f"the pool's Dask client (for the scheduler at {address}) was closed; a client "
            "also closes itself when it cannot reconnect to its scheduler within "
            "distributed.comm.timeouts.connect"
        )
    else:
        what = f"lost the connection to the Dask scheduler at {address}"
    if on_cluster:
        what += "; this job was on the cluster, and whether it ran is unknown"
    return SchedulerLostError(
        f"{what}; {BROKEN}: create a new pool once the scheduler is back", address
    )


def task_error(
    status: str, dask_error: Optional[BaseException], cancel_reason: Optional[str] = None
) -> JobpoolError:
    """A task that Dask failed (status "error") or dropped (any other status)."""
    if status == "error":  # e.g. jobpool itself cannot be imported there
        error = JobpoolError(
            f"Dask could not run this job: {type(dask_error).__name__}: {dask_error} "
            "(jobpool and the job's modules must be importable on every Dask worker)"
        )
        error.__cause__ = dask_error
        return error
    why = f", reason {cancel_reason!r}" if cancel_reason else ""
    return JobpoolError(
        f"Dask dropped this job's task (status {status!r}{why}): someone cancelled it on the "
        "cluster, or the client went away"
    )
