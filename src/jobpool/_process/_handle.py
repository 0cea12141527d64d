"""WorkerHandle: one worker process, its own pipe, its state, and the jobs it holds.

Because each worker has its own pipe and runs its jobs one at a time, in the order sent, the
parent always knows which job a dead or overdue worker was running: only that job fails, the
ones waiting behind it (see _send_ahead) run elsewhere, and nothing needs acknowledging.

The handle is the one owner of everything the parent knows about its worker: its
:class:`~jobpool._process._state.WorkerState`, and the data that is not a state (the job it
runs, the jobs waiting behind it, when the running job started, its time limit, its lent pipe,
why it was killed). Nothing else assigns them: the others report events to its methods (a
reply arrived, the recall was answered, the pipe came back, it exited), and ask it questions.
Each method asks ``_state`` which move the event makes and whether it is allowed (refused
before anything changes), changes its data, then enters the new state, whose rules the data
must meet (``_state.check``).
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import time
from collections import deque
from multiprocessing.context import BaseContext
from typing import Any, Callable, Optional

from .. import _picklers, _platform
from .._errors import JobKilledError, MemoryLimitError
from .._job import Call, Job
from .._protocol import RUN_CALL, RUN_CHUNK, STOP
from ._cpu_demand import CpuDemand
from ._death_notice import held_here_only, worker_exit_pipe
from ._frames import FRAME_HEADER_BYTES, FrameReader, write_frame, write_frames
from ._in_worker import worker_main
from ._large_data import Channel, LargeData, peer_holds
from ._lease import Lease
from ._memory import ProcessListing, WorkerMemory
from ._send_ahead import JOB_TIME_WEIGHT, KILLED_WAITING, SEND_BUFFER_BYTES
from ._shipped import Shipped
from ._start import WORKER_NAME_PREFIX, StartupOutput, WorkerSetup
from ._state import (
    AGREEING,
    HOLDS_JOB,
    Move,
    WorkerState,
    allows,
    check,
    fits_ahead,
    next_state,
    pipe_returned_move,
    recall_answered_move,
    recall_due_at,
    reply_move,
)
from ._stopping import kill_worker


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
        self.created_at = time.monotonic()
        self.start_seconds = math.inf  # from its start to its READY (once it said so)
        self._start_process(context, setup, log_level, large)
        self.fd = self.conn.fileno()
        # Its socket's send buffer, where what it holds unread can be asked (see send_room).
        self._send_buffer = _platform.send_buffer(self.fd, SEND_BUFFER_BYTES)
        self.reader = FrameReader(self.fd, pickles=True)  # a worker sends pickles only
        pidfd = _platform.pidfd_open(self.process.pid)  # None: no pidfds here (or turned off)
        self._owns_exit_fd = pidfd is not None
        self.exit_fd: int = _exit_fd(self.process, pidfd, self._exit_reader)
        self.pid: Optional[int] = self.process.pid
        # How much of a CPU its jobs want (see _cpu_demand): asked only while the pool grows.
        self.cpu = CpuDemand(self.pid, time.monotonic())
        self.shipped = Shipped()  # the keyed functions and blobs it keeps
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
        self.protocol_breach: Optional[str] = None
        # Why a job could not be sent to it, if that is why we killed it (see run).
        self.unreachable: Optional[str] = None
        # Messages written together once the dispatcher has sent all it sends now (see
        # hold_writes); None: each send writes at once.
        self._outbox: Optional[list[bytes]] = None
        self._outbox_bytes = 0
        self.replied_after_kill = False  # so it started the next job sent ahead
        self.exited_from: Optional[WorkerState] = None  # its state when its exit was seen
        # Its memory: the running job's limit, its own size, the OOM killer (see _memory).
        self.memory = WorkerMemory(self.pid or 0, context.get_start_method() == "fork")
        # Told of the descriptor that says "out of memory" once it has one (see watch_memory).
        self._watch_memory: Optional[Callable[[int], None]] = None
        self.memory_limit: Optional[int] = None  # the running job's job_memory_limit
        self.too_big = False  # over max_worker_memory: it takes no job any more
        # Known once it exited by itself: its cgroup's limit stopped its job, or how we know
        # the kernel's out-of-memory killer killed it.
        self.limit_error: Optional[MemoryLimitError] = None
        self.oom_note: Optional[str] = None

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
            # Carries the shared-memory segments (or their names), both ways (see _large_data).
            self.segments: Optional[Channel] = None
            child_segments = None
            if large is not None:
                self.segments, child_segments = large.channel_pair()
                ours.append(self.segments)
                theirs.append(child_segments)
            worker_large = None if large is None else LargeData(*large.settings, child_segments)
            # "Give back the jobs you have not started": read by the worker's watch thread, so
            # it is heard while the worker runs a job (see _send_ahead).
            recall_reader, self._recall = context.Pipe(duplex=False)
            ours.append(self._recall)
            held_here_only(self._recall)  # its end of file: this process died
            theirs.append(recall_reader)
            # Without pidfds, its end of file: the worker exited (see _death_notice).
            self._exit_reader, exit_writer = worker_exit_pipe(context)
            if self._exit_reader is not None:
                ours.append(self._exit_reader)
                theirs.append(exit_writer)
            # The worker's stderr until it is ready (see _start).
            stderr_reader, stderr_writer = context.Pipe(duplex=False)
            ours.append(stderr_reader)
            theirs.append(stderr_writer)
            self.process: Any = context.Process(  # type: ignore[attr-defined]
                target=worker_main,
                args=(
                    *(child_conn, recall_reader, setup, log_level, stderr_writer, worker_large),
                    exit_writer,
                ),
                name=f"{WORKER_NAME_PREFIX}{self.index}",
                daemon=True,
            )
            if context.get_start_method() == "fork":
                with _picklers.IMPORT_FORK_LOCK:  # not while jobpool imports cloudpickle
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

    # --- the state: every change goes through here ------------------------------------------

    # Each method first asks ``next_state`` where its move leads (which raises WorkerStateError,
    # before anything changes, if the table does not allow it), changes the data, then enters
    # the new state with ``_become``.

    def _become(self, state: WorkerState) -> None:
        """Enter ``state``, whose rules the data must now meet (see ``_state.check``)."""
        self.state = state
        lease = self.lease
        data = (state, self.job is not None, bool(self.ahead), lease is not None and lease.active)
        if data not in AGREEING:  # inline: one set lookup per move
            check(*data)

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

    @property
    def lent(self) -> bool:
        """Whether a caller thread holds its pipe now (see _lending)."""
        return self.lease is not None and self.lease.active

    def ready(self) -> None:
        """It said READY."""
        self._become(next_state(self.state, Move.READY))
        self.start_seconds = time.monotonic() - self.created_at

    # --- jobs ----------------------------------------------------------------------------------

    def fits_ahead(self, job: Job) -> bool:
        """Whether ``job`` is small enough to wait in the pipe, its function already here (and
        its memory limit the running job's: a job sent ahead starts before the parent knows).

        Nor a job whose buffers go through shared memory while the worker's end of the socket
        they travel on is gone (a job it ran before closed it, or put another file in its
        place): the send would fail and end the worker, and the job it runs would fail with
        it, for what another job did. Sent to that worker once idle, only that job is at stake.
        """
        if job.memory_limit is not self.memory_limit or self.too_big:
            return False
        serialized = job.serialized
        assert serialized is not None
        if serialized.segment is not None and not peer_holds(self.segments):
            return False
        key = serialized.fn_key
        ahead = len(self.ahead)
        if key is None:  # the function travels with it
            size = len(serialized.body) + len(serialized.fn_bytes or b"")
            return fits_ahead(size, True, ahead, self.send_room)
        return fits_ahead(
            len(serialized.body), self.shipped.has_function(key), ahead, self.send_room
        )

    def send_room(self) -> Optional[int]:
        """The bytes its socket can still take without a write blocking, counting those held
        to be written (see hold_writes); None where that cannot be known (``_platform.OUTQ``)."""
        if self._send_buffer is None:
            return None
        unsent = _platform.unsent_bytes(self.fd)
        if unsent is None:
            return None
        return self._send_buffer - unsent - self._outbox_bytes

    @property
    def recall_at(self) -> Optional[float]:
        """When to take back the jobs waiting behind the running one, if any wait."""
        return recall_due_at(self.state, len(self.ahead), self.started_at, self.recalled_at)

    def past_deadline(self, now: float) -> bool:
        """Whether its running job has run past its time limit (and the worker is not killed)."""
        return self.deadline is not None and self.deadline <= now and self.job is not None

    def running(self, future: object) -> bool:
        """Whether the job it runs is ``future``'s."""
        job = self.job
        return job is not None and job.future is future and self.state in HOLDS_JOB

    def run(self, job: Job) -> None:
        """Send ``job`` to the worker: to run now if it is idle, else after the ones it holds.

        A job's time limit starts when it starts, not when it was queued or sent.
        """
        if self.state is WorkerState.IDLE:
            state = next_state(self.state, Move.RUN)
            self.job = job
            self.started_at = now = time.monotonic()
            self.deadline = now + job.timeout if job.timeout is not None else None
            self._become(state)
            # Before the job can run; False: over the limit before it began (killed: its exit
            # fails the job).
            if job.memory_limit is not self.memory_limit and not self._limit_memory(
                job.memory_limit, now
            ):
                return
        else:
            state = next_state(self.state, Move.RUN_AHEAD)
            self.ahead.append(job)
            self._become(state)
        try:
            self._send(job)
        except OSError as exc:
            self._cannot_write(exc)
            raise

    def _cannot_write(self, exc: OSError) -> None:
        """The worker died under us, or it broke its own end of a pipe (a job closed it):
        either way it cannot run what it holds. A live one would wait for a job that never
        came, its future never resolved: end it as if it had crashed (no KILL move: the replies
        it sent before still count), and its exit fails its running job and hands back the ones
        behind it. A dead one is only a zombie to be reaped."""
        if self.unreachable is None:
            self.unreachable = f"{type(exc).__name__}: {exc}"
            kill_worker(self.process, self.exit_fd if self._owns_exit_fd else None)

    def hold_writes(self) -> None:
        """Keep what is sent to it from now until ``flush_writes``, to write it in one call.

        The dispatcher holds them while it sends a busy worker several jobs at once: one
        system call (and one hand-off of the GIL) where each job took one.
        """
        if self._outbox is None:
            self._outbox = []

    def flush_writes(self) -> None:
        """Write what was held; raises ``OSError`` as ``run`` does (the worker is then ended)."""
        messages, self._outbox = self._outbox, None
        self._outbox_bytes = 0
        if not messages:
            return
        try:
            write_frames(self.fd, messages)
        except OSError as exc:
            self._cannot_write(exc)
            raise

    def _send(self, job: Job) -> None:
        serialized = job.serialized
        assert serialized is not None
        fn_bytes = serialized.fn_bytes
        key = serialized.fn_key
        if key is not None:
            assert fn_bytes is not None
            self.shipped.send_function(key, fn_bytes, serialized.fn_blobs, self._write)
            fn_bytes = None
        tag = RUN_CALL if isinstance(job.work, Call) else RUN_CHUNK
        body: Any = serialized.body
        if serialized.segment is not None:  # its descriptor first, then the message naming it
            assert self.segments is not None
            body = serialized.segment.send(self.segments, job.id, body)
        self._write(pickle.dumps((tag, job.id, key, fn_bytes, body), pickle.HIGHEST_PROTOCOL))

    def _write(self, data: bytes) -> None:
        outbox = self._outbox
        if outbox is not None:
            outbox.append(data)
            self._outbox_bytes += len(data) + FRAME_HEADER_BYTES
        else:
            write_frame(self.fd, data)

    def replied(self, job_id: int) -> Optional[Job]:
        """It replied to job ``job_id``: that job, done here (None if it is not the one it
        runs). The next job sent ahead, if any, starts now.

        A worker we killed may still reply: its job fails when its exit is seen, with the
        reason it was killed for, and it had started the next job sent ahead (if any).
        """
        move = reply_move(self.state, len(self.ahead))
        if move is None:
            self.replied_after_kill = True
            return None
        state = next_state(self.state, move)
        job, self.job, self.deadline = self.job, None, None
        self.jobs_done += 1
        now = time.monotonic()
        if job is not None:
            seconds = now - self.started_at
            if self.job_seconds == math.inf:
                self.job_seconds = seconds
            else:
                self.job_seconds += (seconds - self.job_seconds) * JOB_TIME_WEIGHT
        following = None
        if self.ahead:
            following = self.job = self.ahead.popleft()
            self.started_at = now
            if following.timeout is not None:
                self.deadline = now + following.timeout
        self._become(state)
        if following is not None and following.future.resolved:
            # Pool.kill() failed it while it waited here, too late to take it back: it started.
            self.kill(JobKilledError(KILLED_WAITING))
        elif following is not None and following.memory_limit is not self.memory_limit:
            # (It started in the worker a moment ago, under the limit of the job before.)
            self._limit_memory(following.memory_limit, now)
        return job if job is not None and job.id == job_id else None

    # --- memory (see _memory) -------------------------------------------------------------------

    def _limit_memory(self, limit: Optional[int], now: float) -> bool:
        """The job starting now may use ``limit`` bytes (None: no limit). False if the worker
        is over it already (it is killed: its exit fails the job)."""
        self.memory_limit = limit
        had_cgroup = self.memory.cgroup is not None
        error = self.memory.job_starts(limit, now)
        fd = self.memory_fd
        if not had_cgroup and fd is not None and self._watch_memory is not None:
            self._watch_memory(fd)
        if error is not None:
            self.kill(error)
            return False
        return True

    def watch_memory(self, watch: Callable[[int], None]) -> None:
        """Who to tell of the descriptor that says its cgroup ran out of memory, once made."""
        self._watch_memory = watch

    @property
    def memory_fd(self) -> Optional[int]:
        """The descriptor that says its cgroup ran out of memory, if it has one."""
        cgroup = self.memory.cgroup
        return None if cgroup is None else cgroup.notify_fd

    @property
    def memory_due_at(self) -> Optional[float]:
        """When to sample its running job's memory (a limit held by sampling), if ever."""
        return self.memory.next_sample if self.job is not None else None

    def sample_memory(self, now: float, listing: ProcessListing) -> None:
        """Sample its running job's memory; kill it (with the job's error) if over its limit."""
        if self.state is WorkerState.KILLED or self.job is None:
            return
        error = self.memory.sample(now, listing)
        if error is not None:
            self.kill(error)

    def out_of_memory(self) -> None:
        """Its cgroup ran out of memory: the running job went over its limit."""
        error = self.memory.hit_limit()
        if error is not None and self.job is not None and self.state is not WorkerState.KILLED:
            self.kill(error)

    def check_size(self, most: int) -> bool:
        """After a job: whether the worker is over ``most`` bytes of its own (max_worker_memory);
        if so it takes no job any more, and is to be stopped once it holds none."""
        if not self.too_big:
            self.too_big = self.memory.over(most, time.monotonic())
        return self.too_big

    def recall(self) -> None:
        """Ask the worker to give back the jobs it has not started (answered by GIVE_BACK)."""
        if self.state is WorkerState.BUSY:
            self._become(next_state(self.state, Move.RECALL))
        try:
            self._recall.send_bytes(b"r")
        except OSError:  # it is exiting: its exit hands the jobs back
            pass

    def recall_answered(self, ids: list[int]) -> list[Job]:
        """The worker will not run the jobs ``ids``: take them off its hands, in order."""
        self.recalled_at = time.monotonic()
        returned = set(ids)
        back: list[Job] = []
        job = self.job
        if job is not None and job.id in returned:  # its reply to the job before came first
            back.append(job)
        back += [job for job in self.ahead if job.id in returned]
        move = recall_answered_move(self.state, job is not None and job.id not in returned)
        state = self.state if move is None else next_state(self.state, move)
        if back:
            if job is not None and job.id in returned:
                self.job, self.deadline = None, None
            self.ahead = deque(job for job in self.ahead if job.id not in returned)
        self._become(state)
        return back

    def release_jobs(self) -> tuple[Optional[Job], list[Job]]:
        """The worker is gone (or nobody will hear it): the job it ran, and the ones sent
        ahead that it had not started, in order; it holds none from now on."""
        job, self.job, self.deadline = self.job, None, None
        ahead = list(self.ahead)
        self.ahead.clear()
        return job, ahead

    # --- lending the pipe (see _lending) -------------------------------------------------------

    def lend(self) -> Lease:
        """Hand the pipe to a thread waiting for the running job's reply (under the lock).

        Raises ``OSError`` (its first lease needs a pipe: out of descriptors) before it moves.
        """
        state = next_state(self.state, Move.LEND)
        if self.lease is None:
            self.lease = Lease(self.fd)
        self.lease.active = True
        self._become(state)
        return self.lease

    def pipe_returned(self) -> None:
        """The thread gave the pipe back (under the lock)."""
        assert self.lease is not None
        move = pipe_returned_move(self.state, self.job is not None)
        state = self.state if move is None else next_state(self.state, move)
        self.lease.active = False
        self._become(state)
        if self.state is WorkerState.EXITED:
            self.close_fds()  # left open for the thread by reap()

    # --- the end ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to exit after its current job; its exit is then expected."""
        self._become(next_state(self.state, Move.STOP))
        try:
            self._write(pickle.dumps((STOP,)))
        except OSError:
            pass

    def may_stop(self) -> bool:
        return allows(self.state, Move.STOP)

    def kill(self, failure: Optional[BaseException] = None) -> None:
        """Kill the worker with every process it started; its exit (which fails its job with
        ``failure``) is seen once they are all gone. Killing it again changes nothing."""
        if self.state is WorkerState.KILLED:
            return  # its tree is being stopped already; the first kill's reason stands
        state = next_state(self.state, Move.KILL)
        self.failure = failure
        self.deadline = None  # its exit fails the job: no time limit to watch any more
        self._become(state)
        kill_worker(self.process, self.exit_fd if self._owns_exit_fd else None)

    def kill_for_breach(self, what: str) -> bool:
        """It sent ``what`` out of turn: read nothing more from it, and kill it (its exit fails
        its job with ``WorkerCrashedError`` saying so). False if it was killed already (a time
        limit, say): that reason stands."""
        self.reader.stop(what)
        if self.state is WorkerState.KILLED:
            return False
        self.protocol_breach = what
        self.kill()
        return True

    def reap(self) -> Optional[int]:
        """Collect the exited process; returns its exit code (negative: killed by that signal).

        Called once its exit fd fired (or after kill()), so the join only collects it. A timed
        join would wait on the multiprocessing sentinel, which the fork race above can keep shut.
        """
        self.process.join()
        code: Optional[int] = self.process.exitcode
        state = next_state(self.state, Move.EXIT)
        self.exited_from = self.state
        self._become(state)
        self.oom_note = self.memory.oom_killed() if code == -signal.SIGKILL else None
        self.limit_error = self.memory.exit_error() if self.failure is None else None
        # What its job left running is killed unless it ended as asked (recycled, shut down).
        self.memory.close(killed=self.exited_from is not WorkerState.RETIRING)
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
        if self._exit_reader is not None:
            self._exit_reader.close()
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


def _exit_fd(process: Any, pidfd: Optional[int], exit_reader: Any) -> int:
    """A file descriptor that becomes readable when ``process`` exits.

    On Linux a pidfd, which follows the process itself. Elsewhere the read end of a pipe whose
    write end only the worker holds (``_death_notice``), and the multiprocessing sentinel only
    for a handle made without one. The sentinel is the read end of a pipe whose write end the
    child holds; with the fork start method, any process forked at the same moment by another
    thread (another pool starting workers, say) can inherit that write end too, and then the
    sentinel stays silent after our worker exits; under forkserver it comes from the fork
    server, and fires for every worker when the fork server dies.
    """
    if pidfd is not None:
        return pidfd
    return int(process.sentinel) if exit_reader is None else int(exit_reader.fileno())
