"""WorkerHandle: one worker process, its own pipe, its state, and the jobs it holds.

Because each worker has its own pipe and runs its jobs one at a time, in the order sent, the
parent always knows which job a dead or overdue worker was running: only that job fails, the
ones waiting behind it (see _ahead) run elsewhere, and nothing needs acknowledging.

The handle's :class:`~jobpool._process._state.WorkerState` is its one state; every method that
changes it goes through :meth:`WorkerHandle.move`, which refuses a move the table in ``_state``
does not allow. What is not a state is data: the job it runs, the jobs waiting behind it, when
the running job started, why it was killed.
"""

from __future__ import annotations

import math
import os
import pickle
import socket
import time
from collections import deque
from multiprocessing.context import BaseContext
from typing import Any, Optional

from .. import _serialization
from .._job import Call, Job
from . import _protocol as p
from ._ahead import (
    AHEAD_JOBS,
    JOB_TIME_WEIGHT,
    MAX_AHEAD_BYTES,
    RECALL_AFTER_SECONDS,
    SHORT_JOB_SECONDS,
)
from ._frames import FrameReader, write_frame
from ._held import Held
from ._large_data import LargeData
from ._lease import Lease
from ._shared_memory import socket_pair
from ._start import WORKER_NAME_PREFIX, StartupOutput, WorkerSetup
from ._state import HOLDS_JOB, Move, WorkerState, next_state
from ._stopping import kill_worker
from ._worker import worker_main


class WorkerHandle:
    def __init__(
        self,
        context: BaseContext,
        index: int,
        setup: WorkerSetup,
        log_level: int,
        large: Optional[LargeData] = None,
    ):
        self.index = index
        self.state = WorkerState.STARTING
        self._start_process(context, setup, log_level, large)
        self.fd = self.conn.fileno()
        self.reader = FrameReader(self.fd, pickles=True)  # a worker sends pickles only
        self.exit_fd: int = _exit_fd(self.process)
        self._owns_exit_fd = self.exit_fd != self.process.sentinel
        self.pid: Optional[int] = self.process.pid
        self.held = Held()
        # A thread waiting for this worker's job result may read the reply itself (_lending).
        self.lease: Optional[Lease] = None
        self.job: Optional[Job] = None  # the job it runs (as far as the parent knows)
        self.ahead: deque[Job] = deque()  # sent behind it, in the order the worker runs them
        self.started_at = 0.0  # when self.job started: its reply to the job before came in
        self.recalled_at = 0.0  # when the last recall was answered
        self.job_seconds = math.inf  # running average of its recent job times (none yet)
        self.deadline: Optional[float] = None
        self.jobs_done = 0
        self.failure: Optional[BaseException] = None  # why we killed it (KILLED)
        # What it sent out of turn, if that is why we killed it (see _messages).
        self.broke_protocol: Optional[str] = None
        # Why a job could not be sent to it, if that is why we killed it (see run).
        self.unreachable: Optional[str] = None
        self.moved_on = False  # KILLED, yet it replied to its job: it started the next one
        self.exited_from: Optional[WorkerState] = None  # its state when its exit was seen

    def _start_process(
        self, context: BaseContext, setup: WorkerSetup, log_level: int, large: Optional[LargeData]
    ) -> None:
        """Start the worker process with its pipes; the child's ends are closed here after.

        A start that fails (out of descriptors, say: ``Workers`` tries again later) closes
        whatever it had made, and nothing that can fail for want of a descriptor comes after
        the process started, so a failed start leaves neither a descriptor nor a process.
        """
        ours: list[Any] = []  # the parent's ends: closed if the start fails
        theirs: list[Any] = []  # the child's ends: closed here once it started (or failed to)
        try:
            self.conn, child_conn = context.Pipe(duplex=True)
            ours.append(self.conn)
            theirs.append(child_conn)
            # Carries the descriptors of shared-memory segments, both ways (see _large_data).
            self.segments: Optional[socket.socket] = None
            child_segments = None
            if large is not None:
                self.segments, child_segments = socket_pair()
                ours.append(self.segments)
                theirs.append(child_segments)
            worker_large = None if large is None else LargeData(*large.settings, child_segments)
            # "Give back the jobs you have not started": read by the worker's watch thread, so
            # it is heard while the worker runs a job (see _ahead).
            recall_reader, self._recall = context.Pipe(duplex=False)
            ours.append(self._recall)
            theirs.append(recall_reader)
            # The worker's stderr until it is ready (see _start).
            stderr_reader, stderr_writer = context.Pipe(duplex=False)
            ours.append(stderr_reader)
            theirs.append(stderr_writer)
            self.process: Any = context.Process(  # type: ignore[attr-defined]
                target=worker_main,
                args=(child_conn, recall_reader, setup, log_level, stderr_writer, worker_large),
                name=f"{WORKER_NAME_PREFIX}{self.index}",
                daemon=True,
            )
            if context.get_start_method() == "fork":
                with _serialization.IMPORT_FORK_LOCK:  # not while jobpool imports cloudpickle
                    self.process.start()
            else:
                self.process.start()
        except BaseException:
            for end in ours:
                end.close()
            raise
        finally:
            for end in theirs:
                end.close()
        self.startup_output = StartupOutput(stderr_reader.fileno(), stderr_reader)

    def move(self, move: Move) -> None:
        """Apply ``move`` (raises ``WorkerStateError`` if the state does not allow it)."""
        self.state = next_state(self.state, move)

    @property
    def idle(self) -> bool:
        return self.state is WorkerState.IDLE

    @property
    def holds_job(self) -> bool:
        return self.state in HOLDS_JOB

    @property
    def exited(self) -> bool:
        """Its exit was seen and it was reaped (nothing to read or write any more)."""
        return self.state is WorkerState.EXITED

    # --- jobs ----------------------------------------------------------------------------------

    def can_take_ahead(self, now: float) -> bool:
        """Whether jobs may wait in this worker's pipe behind its running job (see _ahead)."""
        return (
            self.state is WorkerState.BUSY
            and len(self.ahead) < AHEAD_JOBS
            and self.job_seconds < SHORT_JOB_SECONDS
            and now - self.started_at < SHORT_JOB_SECONDS
        )

    def fits_ahead(self, job: Job) -> bool:
        """Whether ``job`` is small enough to wait in the pipe, its function already here."""
        key = job.fn_key
        size = len(job.body or b"")
        if key is None:
            size += len(job.fn_bytes or b"")
        elif not self.held.has_function(key):
            return False
        return size <= MAX_AHEAD_BYTES

    @property
    def recall_at(self) -> Optional[float]:
        """When to take back the jobs waiting behind the running one, if any wait."""
        if not self.ahead or self.state is not WorkerState.BUSY:
            return None
        return max(self.started_at, self.recalled_at) + RECALL_AFTER_SECONDS

    def run(self, job: Job) -> None:
        """Send ``job`` to the worker: to run now if it is idle, else after the ones it holds.

        A job's time limit starts when it starts, not when it was queued or sent.
        """
        if self.state is WorkerState.IDLE:
            self.move(Move.RUN)
            self.job = job
            self.started_at = now = time.monotonic()
            self.deadline = now + job.timeout if job.timeout is not None else None
        else:
            self.move(Move.RUN_AHEAD)
            self.ahead.append(job)
        job.future._worker = self
        try:
            self._send(job)
        except OSError as exc:
            # The worker died under us, or it broke its own end of a pipe (a job closed it):
            # either way it cannot run what it holds. A live one would wait for a job that never
            # came, its future never resolved: end it as if it had crashed (no KILL move: the
            # replies it sent before still count), and its exit fails its running job and hands
            # back the ones behind it. A dead one is only a zombie to be reaped.
            if self.unreachable is None:
                self.unreachable = f"{type(exc).__name__}: {exc}"
                kill_worker(self.process, self.exit_fd if self._owns_exit_fd else None)
            raise

    def _send(self, job: Job) -> None:
        fn_bytes = job.fn_bytes
        key = job.fn_key
        if key is not None:
            assert fn_bytes is not None
            self.held.send_function(key, fn_bytes, job.fn_blobs, self._write)
            fn_bytes = None
        tag = p.RUN_CALL if isinstance(job.work, Call) else p.RUN_CHUNK
        body: Any = job.body
        if job.segment is not None:  # its descriptor first, then the message announcing it
            assert self.segments is not None
            body = job.segment.send(self.segments, job.id, body)
        self._write(pickle.dumps((tag, job.id, key, fn_bytes, body), pickle.HIGHEST_PROTOCOL))

    def _write(self, data: bytes) -> None:
        write_frame(self.fd, data)

    def finish_job(self) -> Optional[Job]:
        """The running job replied: return it; the next one sent ahead (if any) starts now."""
        job, self.job, self.deadline = self.job, None, None
        self.jobs_done += 1
        now = time.monotonic()
        if job is not None:
            job.future._worker = None
            seconds = now - self.started_at
            if self.job_seconds == math.inf:
                self.job_seconds = seconds
            else:
                self.job_seconds += (seconds - self.job_seconds) * JOB_TIME_WEIGHT
        if self.ahead:
            self.move(Move.FINISH_NEXT)
            following = self.job = self.ahead.popleft()
            self.started_at = now
            if following.timeout is not None:
                self.deadline = now + following.timeout
        else:
            self.move(Move.FINISH_LAST)
        return job

    def recall(self) -> None:
        """Ask the worker to give back the jobs it has not started (answered by GIVE_BACK)."""
        if self.state is WorkerState.BUSY:
            self.move(Move.RECALL)
        try:
            self._recall.send_bytes(b"r")
        except OSError:  # it is exiting: its exit hands the jobs back
            pass

    def gave_back(self, ids: list[int]) -> list[Job]:
        """The worker will not run the jobs ``ids``: take them off its hands, in order."""
        self.recalled_at = time.monotonic()
        returned = set(ids)
        back: list[Job] = []
        job = self.job
        if job is not None and job.id in returned:  # its reply to the job before came first
            self.job, self.deadline = None, None
            back.append(job)
        back += [job for job in self.ahead if job.id in returned]
        if back:
            self.ahead = deque(job for job in self.ahead if job.id not in returned)
        for job in back:
            job.future._worker = None
        if self.state is WorkerState.RECALLING:
            self.move(Move.GIVE_BACK_IDLE if self.job is None else Move.GIVE_BACK_BUSY)
        return back

    def take_ahead(self) -> list[Job]:
        """The jobs sent ahead and not started (the worker is gone), in order."""
        jobs = list(self.ahead)
        self.ahead.clear()
        for job in jobs:
            job.future._worker = None
        return jobs

    # --- lending the pipe (see _lending) -------------------------------------------------------

    def lend(self) -> Lease:
        """Hand the pipe to a thread waiting for the running job's reply (under the lock).

        Raises ``OSError`` (its first lease needs a pipe: out of descriptors) before it moves.
        """
        if self.lease is None:
            self.lease = Lease(self.fd)
        self.move(Move.LEND)
        self.lease.active = True
        return self.lease

    def unlend(self) -> None:
        """The thread gave the pipe back (under the lock)."""
        assert self.lease is not None
        self.lease.active = False
        if self.state is WorkerState.LENT:
            self.move(Move.UNLEND_IDLE if self.job is None else Move.UNLEND_BUSY)
        elif self.state is WorkerState.EXITED:
            self.close_fds()  # left open for the thread by reap()

    # --- the end ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to exit after its current job; its exit is then expected."""
        self.move(Move.STOP)
        try:
            self._write(pickle.dumps((p.STOP,)))
        except OSError:
            pass

    def kill(self, failure: Optional[BaseException] = None) -> None:
        """Kill the worker with every process it started; its exit (which fails its job with
        ``failure``) is seen once they are all gone. Killing it again changes nothing."""
        if self.state is WorkerState.KILLED:
            return  # its tree is being stopped already; the first kill's reason stands
        self.failure = failure
        self.move(Move.KILL)
        kill_worker(self.process, self.exit_fd if self._owns_exit_fd else None)

    def reap(self) -> Optional[int]:
        """Collect the exited process; returns its exit code (negative: killed by that signal).

        Called once its exit fd fired (or after kill()), so the join only collects it. A timed
        join would wait on the multiprocessing sentinel, which the fork race above can keep shut.
        """
        self.process.join()
        code: Optional[int] = self.process.exitcode
        self.exited_from = self.state
        self.move(Move.EXIT)
        if self.lease is not None and self.lease.active:
            self.lease.call_off()  # the thread closes the fds once it has stopped polling
        else:
            self.close_fds()
        try:
            self.process.close()
        except ValueError:
            pass
        return code

    def close_fds(self) -> None:
        self.startup_output.close()
        if self._owns_exit_fd:
            os.close(self.exit_fd)
        self.conn.close()
        self._recall.close()
        if self.segments is not None:
            self.segments.close()
        if self.lease is not None:
            self.lease.close()

    def __repr__(self) -> str:
        job = getattr(self.job, "id", None)
        return (
            f"<WorkerHandle {self.index} pid={self.pid} {self.state.value} job={job} "
            f"ahead={len(self.ahead)}>"
        )


def _exit_fd(process: Any) -> int:
    """A file descriptor that becomes readable when ``process`` exits.

    On Linux a pidfd. The multiprocessing sentinel is the read end of a pipe whose write end the
    child holds; with the fork start method, any process forked at the same moment by another
    thread (another pool starting workers, say) can inherit that write end too, and then the
    sentinel stays silent after our worker exits. A pidfd follows the process itself.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            return int(pidfd_open(process.pid))
        except OSError:  # kernels before 5.3, or seccomp filters
            pass
    return int(process.sentinel)
