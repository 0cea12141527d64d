"""What the dispatcher does with each message a worker sends (see ``_protocol``).

A reply resolves its job (and starts the next one sent ahead); a give-back returns jobs to the
line; a log record goes to the parent's handlers; READY and INIT_FAILED finish a worker's start.
The same code serves the dispatcher thread and a caller thread that reads a reply itself
(_lending), always under the dispatcher's lock; only :meth:`Messages.settle`, which resolves a
future and so runs its callbacks, is called outside it.

A worker runs the user's code, and that code can write on the worker's pipe (a job that forks
and returns, one that finds the descriptor): so every message is checked against what that
worker may say in its state (:func:`out_of_turn`) before anything acts on it. Bytes that are not
a message, a frame that does not unpickle, an unknown tag, a second reply, a reply for a job it
does not run, a READY or INIT_FAILED from a worker long started: each is that worker's fault.
It is killed, the job it ran fails with ``WorkerCrashedError`` saying what it sent, and it is
replaced (``Workers.worker_exited``); the dispatcher never raises on what a worker sends.
"""

from __future__ import annotations

import logging
import pickle
import sys
import traceback
from typing import Any, Optional

from .._errors import initializer_error
from .._job import Job, Outcomes
from .._protocol import GIVE_BACK, INIT_FAILED, INIT_LOADING, LOG, OK, RAISED, READY
from .._remote import settle_reply
from .._remote_exceptions import unpack_exception
from ._handle import WorkerHandle
from ._large_data import receive
from ._line import JobLine
from ._state import HOLDS_JOB, MAY_GIVE_BACK, MAY_REPLY, MAY_REPORT_START, WorkerState
from ._workers import Workers

_log = logging.getLogger("jobpool")

#: A job's reply, to settle outside the lock: the job and the message that answers it.
Reply = tuple[Job, tuple[Any, ...]]


class Messages:
    def __init__(self, workers: Workers, line: JobLine, outcomes: Outcomes) -> None:
        self._workers = workers
        self._line = line
        self._outcomes = outcomes

    def read(self, handle: WorkerHandle, blocking_read: bool = True) -> list[Reply]:
        """Read what the worker sent (one ``read`` when the pipe is readable; with
        ``blocking_read=False`` only what is there) and act on it; the replies to settle."""
        reader = handle.reader
        frames = reader.read() if blocking_read else reader.read_ready()
        replies = []
        for data in frames:
            try:
                message = pickle.loads(data)
            except KeyboardInterrupt:  # Ctrl-C in a caller thread reading its reply
                raise
            except BaseException as exc:
                self.broke_protocol(
                    handle, f"a message that does not unpickle ({type(exc).__name__}: {exc})"
                )
                break
            wrong = out_of_turn(handle, message)
            if wrong is not None:
                self.broke_protocol(handle, wrong)
                break
            reply = self.handle(handle, message)
            if reply is not None:
                replies.append(reply)
        if reader.corrupt is not None and handle.state is not WorkerState.KILLED:
            self.broke_protocol(handle, reader.corrupt)
        return replies

    def broke_protocol(self, handle: WorkerHandle, what: str) -> None:
        """``handle``'s worker sent ``what`` out of turn: kill it; its exit fails its job."""
        if handle.kill_for_breach(what):  # not if killed already (a time limit, say)
            _log.warning(
                "jobpool worker process %s sent %s; it is killed and replaced", handle.pid, what
            )

    def handle(self, handle: WorkerHandle, message: tuple[Any, ...]) -> Optional[Reply]:
        """Act on one message (checked by :func:`out_of_turn`); a job's reply is returned, for
        the caller to settle."""
        tag = message[0]
        if tag in _REPLIES:
            return self._reply(handle, message)
        if tag == GIVE_BACK:
            self._line.give_back(handle.recall_answered(message[1]))
            self._workers.recycle_if_due(handle)  # it may have been waiting to be idle
        elif tag == LOG:
            record = _log_record(handle, message[1])
            if record is None:
                self.broke_protocol(handle, "a log record that is not one")
            else:
                _forward_log(record)
        elif tag == READY:
            handle.ready()
            self._workers.on_ready(handle)
        elif tag == INIT_FAILED:
            try:
                cause = unpack_exception(message[2])
            except Exception:
                self.broke_protocol(handle, "an INIT_FAILED whose error does not unpickle")
                return None
            self._workers.break_pool(
                initializer_error(
                    cause, f"in worker process {handle.pid}", loading=message[1] == INIT_LOADING
                )
            )
        return None

    def _reply(self, handle: WorkerHandle, message: tuple[Any, ...]) -> Optional[Reply]:
        if message[0] == OK and type(message[2]) is tuple:  # its buffers wait in a segment
            # Taken off the socket now, whatever happens to the reply, so none is left behind.
            message = (OK, message[1], receive(handle.segments, message[1], message[2]))
        job = handle.replied(message[1])
        workers = self._workers
        if workers.max_jobs is not None or workers.max_memory is not None:
            workers.recycle_if_due(handle)  # its last job, or its memory, say so now
        return None if job is None else (job, message)

    def settle(self, reply: Reply) -> None:
        """Resolve a replied job's future (outside the lock: its callbacks may use the pool)."""
        job, (tag, _, data) = reply
        if type(data) is not bytes:  # a result whose buffers came through shared memory
            succeeded, value = data.load_result(job)
            if succeeded:
                self._outcomes.succeed(job, value)
            else:
                self._outcomes.fail(job, value)
            return
        settle_reply(self._outcomes, job, tag == RAISED, data)


def _log_record(handle: WorkerHandle, state: dict[str, Any]) -> Optional[logging.LogRecord]:
    """The record a worker sent, or None if it is not one (a logger name, a numeric level)."""
    try:
        record = logging.makeLogRecord(state)
    except Exception:
        return None
    if type(record.name) is not str or type(record.levelno) is not int:
        return None
    record.jobpool_worker = handle.index
    record.processName = f"jobpool-worker-{handle.index}"
    return record


def _forward_log(record: logging.LogRecord) -> None:
    """Hand a worker's record to this process's handlers; a handler's or filter's failure is
    reported as logging reports its own, never raised into the dispatcher."""
    logger = logging.getLogger(record.name)
    try:
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    except Exception:
        if logging.raiseExceptions and sys.stderr is not None:
            sys.stderr.write("--- Logging error (a record from a jobpool worker) ---\n")
            traceback.print_exc(file=sys.stderr)


_REPLIES = frozenset((OK, RAISED))
_ARITY = {OK: 3, RAISED: 3, GIVE_BACK: 2, LOG: 2, READY: 2, INIT_FAILED: 3}


def out_of_turn(handle: WorkerHandle, message: Any) -> Optional[str]:
    """What is wrong with ``message`` from ``handle``'s worker in its state; None if nothing."""
    if type(message) is not tuple or not message:
        return f"a {type(message).__name__} where a message is a tuple"
    tag = message[0]
    if tag in _REPLIES and len(message) == 3:  # the usual one, checked first
        job = handle.job
        if (
            job is not None
            and job.id == message[1]
            and handle.state in HOLDS_JOB
            and type(message[2]) is bytes
        ):
            return None
    arity = _ARITY.get(tag) if type(tag) is int else None
    if arity is None:
        return f"a message with the unknown tag {tag!r}"
    if len(message) != arity:
        return f"a message of {len(message)} parts with tag {tag!r}, which has {arity}"
    state = handle.state
    if tag in _REPLIES:
        job_id, data = message[1], message[2]
        if type(job_id) is not int or not (type(data) is bytes or _is_wire(tag, data)):
            return "a reply that is not (tag, job id, bytes)"
        if state is WorkerState.KILLED:
            return None
        job = handle.job
        if state not in MAY_REPLY or job is None:
            return f"a reply for job {job_id} while it ran no job (a second reply?)"
        if job.id != job_id:
            return f"a reply for job {job_id} while it ran job {job.id}"
    elif tag == GIVE_BACK:
        ids = message[1]
        if type(ids) is not list or any(type(i) is not int for i in ids):
            return "a GIVE_BACK that is not a list of job ids"
        if state not in MAY_GIVE_BACK:
            return "a GIVE_BACK nobody asked for"
        held = {job.id for job in handle.ahead}
        if handle.job is not None:
            held.add(handle.job.id)
        if state is not WorkerState.KILLED and not held.issuperset(ids):
            return f"a GIVE_BACK of jobs it does not hold ({sorted(set(ids) - held)})"
    elif tag == LOG:
        if type(message[1]) is not dict:
            return "a log record that is not a dict"
    elif tag == READY:
        if state not in MAY_REPORT_START:
            return f"READY while {state.value}, long after it started"
    elif tag == INIT_FAILED and (state not in MAY_REPORT_START or type(message[2]) is not bytes):
        return f"INIT_FAILED while {state.value}, long after its initializer ran"
    return None


def _is_wire(tag: int, data: Any) -> bool:
    """Whether ``data`` is a result's shared-memory announcement (see _large_data.Wire)."""
    return (
        tag == OK
        and type(data) is tuple
        and len(data) == 3
        and type(data[0]) is bytes
        and type(data[1]) is list
        and type(data[2]) is int
    )
