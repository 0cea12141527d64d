"""What the dispatcher does with each message a worker sends (see ``_protocol``).

A reply resolves its job (and starts the next one sent ahead); a give-back returns jobs to the
line; a log record goes to the parent's handlers; READY and INIT_FAILED finish a worker's start.
The same code serves the dispatcher thread and a caller thread that reads a reply itself
(_lending), always under the dispatcher's lock; only :meth:`Messages.settle`, which resolves a
future and so runs its callbacks, is called outside it.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any, Optional

from .._errors import JobKilledError, initializer_error
from .._job import Job, Outcomes
from .._remote import settle_reply, unpack_exception
from . import _protocol as p
from ._handle import WorkerHandle
from ._large_data import receive
from ._line import JobLine
from ._state import Move, WorkerState
from ._workers import KILLED_WAITING, Workers

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
        frames = handle.reader.read() if blocking_read else handle.reader.read_ready()
        replies = []
        for data in frames:
            reply = self.handle(handle, pickle.loads(data))
            if reply is not None:
                replies.append(reply)
        return replies

    def handle(self, handle: WorkerHandle, message: tuple[Any, ...]) -> Optional[Reply]:
        """Act on one message; a job's reply is returned, for the caller to settle."""
        tag = message[0]
        if tag == p.OK or tag == p.RAISED:
            return self._reply(handle, message)
        if tag == p.GIVE_BACK:
            self._line.give_back(handle.gave_back(message[1]))
        elif tag == p.LOG:
            _forward_log(handle, message[1])
        elif tag == p.READY:
            handle.move(Move.READY)
            self._workers.on_ready()
        elif tag == p.INIT_FAILED:
            self._workers.break_pool(
                initializer_error(
                    unpack_exception(message[2]),
                    f"in worker process {handle.pid}",
                    loading=message[1] == p.INIT_LOADING,
                )
            )
        return None

    def _reply(self, handle: WorkerHandle, message: tuple[Any, ...]) -> Optional[Reply]:
        if message[0] == p.OK and type(message[2]) is tuple:  # its buffers wait in a segment
            # Taken off the socket now, whatever happens to the reply, so none is left behind.
            message = (p.OK, message[1], receive(handle.segments, message[1], message[2]))
        if handle.state is WorkerState.KILLED:
            # We killed this worker (timeout, Pool.kill): its job fails with that reason when
            # the exit is seen, even if a reply slipped out meanwhile; and it is replaced there,
            # not also recycled here.
            handle.moved_on = True
            return None
        job = handle.finish_job()
        reply = (job, message) if job is not None and job.id == message[1] else None
        following = handle.job
        if following is not None and following.killed:  # Pool.kill() came too late
            handle.kill(JobKilledError(KILLED_WAITING))
            return reply
        self._workers.recycle_if_due(handle)
        return reply

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
        settle_reply(self._outcomes, job, tag == p.RAISED, data)


def _forward_log(handle: WorkerHandle, state: dict[str, Any]) -> None:
    record = logging.makeLogRecord(state)
    record.jobpool_worker = handle.index
    record.processName = f"jobpool-worker-{handle.index}"
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)
