"""WorkerHandle: one worker process, its own pipe, and the jobs it holds.

Because each worker has its own pipe and runs its jobs one at a time, in the order sent, the
parent always knows which job a dead or overdue worker was running: only that job fails, the
ones waiting behind it (see _ahead) run elsewhere, and nothing needs acknowledging.
"""

from __future__ import annotations

import math
import os
import pickle
import select
import socket
import time
from collections import OrderedDict, deque
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
from ._blobs import MAX_BLOB_BYTES, MAX_BLOBS, Blob
from ._frames import FrameReader, write_frame
from ._large_data import LargeData
from ._shared_memory import socket_pair
from ._worker import worker_main


class WorkerHandle:
    def __init__(
        self,
        context: BaseContext,
        index: int,
        setup: tuple[Any, tuple[Any, ...]],
        log_level: int,
        large: Optional[LargeData] = None,
    ) -> None:
        self.index = index
        self.conn, child_conn = context.Pipe(duplex=True)
        # Carries the descriptors of shared-memory segments, both ways (see _large_data).
        self.segments: Optional[socket.socket] = None
        child_segments = None
        if large is not None:
            self.segments, child_segments = socket_pair()
        worker_large = None if large is None else LargeData(*large.settings, child_segments)
        # "Give back the jobs you have not started": read by the worker's watch thread, so it
        # is heard while the worker runs a job (see _ahead).
        recall_reader, self._recall = context.Pipe(duplex=False)
        self.process: Any = context.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child_conn, recall_reader, setup, log_level, worker_large),
            name=f"jobpool-worker-{index}",
            daemon=True,
        )
        if context.get_start_method() == "fork":
            with _serialization.IMPORT_FORK_LOCK:  # not while jobpool imports cloudpickle
                self.process.start()
        else:
            self.process.start()
        child_conn.close()
        recall_reader.close()
        if child_segments is not None:
            child_segments.close()
        self.fd = self.conn.fileno()
        self.reader = FrameReader(self.fd)
        self.exit_fd: int = _exit_fd(self.process)
        self._owns_exit_fd = self.exit_fd != self.process.sentinel
        self.pid: Optional[int] = self.process.pid
        self.ready = False
        self.retiring = False  # sent STOP (recycled or pool closing); its exit is expected
        self.job: Optional[Job] = None  # the job it runs (as far as the parent knows)
        self.ahead: deque[Job] = deque()  # sent behind it, in the order the worker runs them
        self.recalling = False  # asked to give back the jobs it has not started
        self.started_at = 0.0  # when self.job started: its reply to the job before came in
        self.recalled_at = 0.0  # when the last recall was answered
        self.job_seconds = math.inf  # running average of its recent job times (none yet)
        self.moved_on = False  # replied to its job after we killed it: the next one started
        self.deadline: Optional[float] = None
        self.jobs_done = 0
        self.failure: Optional[BaseException] = None  # set when we killed it on purpose
        self.reaped = False
        # A thread waiting on this worker's job result reads the reply itself (see
        # Dispatcher.read_reply); meanwhile the dispatcher does not watch the pipe.
        self.helped = False
        self._helper_wake: Optional[tuple[int, int]] = None  # pipe: "stop waiting, I took over"
        self._helper_poll: Any = None
        self._functions: OrderedDict[int, None] = OrderedDict()
        self._blobs: OrderedDict[int, int] = OrderedDict()  # blob key -> size, oldest first
        self._blob_bytes = 0

    @property
    def idle(self) -> bool:
        return self.ready and self.job is None and not self.retiring and not self.recalling

    def can_take_ahead(self, now: float) -> bool:
        """Whether jobs may wait in this worker's pipe behind its running job (see _ahead)."""
        return (
            self.job is not None
            and len(self.ahead) < AHEAD_JOBS
            and self.job_seconds < SHORT_JOB_SECONDS
            and now - self.started_at < SHORT_JOB_SECONDS
            and not self.retiring
            and not self.recalling
            and not self.helped
            and self.failure is None
        )

    def fits_ahead(self, job: Job) -> bool:
        """Whether ``job`` is small enough to wait in the pipe, its function already here."""
        key = job.fn_key
        size = len(job.body or b"")
        if key is None:
            size += len(job.fn_bytes or b"")
        elif key not in self._functions:
            return False
        return size <= MAX_AHEAD_BYTES

    @property
    def recall_at(self) -> Optional[float]:
        """When to take back the jobs waiting behind the running one, if any wait."""
        if not self.ahead or self.recalling or self.failure is not None:
            return None
        return max(self.started_at, self.recalled_at) + RECALL_AFTER_SECONDS

    def run(self, job: Job) -> None:
        """Send ``job`` to the worker: to run now if it is idle, else after the ones it holds.

        A job's time limit starts when it starts, not when it was queued or sent.
        """
        job.future._worker = self
        if self.job is None:
            self.job = job
            self.started_at = now = time.monotonic()
            self.deadline = now + job.timeout if job.timeout is not None else None
        else:
            self.ahead.append(job)
        fn_bytes = job.fn_bytes
        key = job.fn_key
        if key is not None:
            if key in self._functions:
                self._functions.move_to_end(key)
            else:
                if job.fn_blobs:
                    self._send_blobs(job.fn_blobs)
                self._write(pickle.dumps((p.DEFINE_FN, key), pickle.HIGHEST_PROTOCOL))
                self._write(fn_bytes)  # type: ignore[arg-type]
                self._functions[key] = None
                if len(self._functions) > p.FUNCTION_CACHE_SIZE:
                    self._functions.popitem(last=False)
            fn_bytes = None
        tag = p.RUN_CALL if isinstance(job.work, Call) else p.RUN_CHUNK
        body: Any = job.body
        if job.segment is not None:  # its descriptor first, then the message announcing it
            body = job.segment.send(self.segments, job.id, body)
        self._write(pickle.dumps((tag, job.id, key, fn_bytes, body), pickle.HIGHEST_PROTOCOL))

    def _write(self, data: bytes) -> None:
        write_frame(self.fd, data)

    def _send_blobs(self, blobs: tuple[Blob, ...]) -> None:
        """Make sure the worker holds ``blobs``; forget its oldest others beyond the bounds."""
        needed = {key for key, _ in blobs}
        for key, value in blobs:
            if key in self._blobs:
                self._blobs.move_to_end(key)
                continue
            self._write(pickle.dumps((p.DEFINE_BLOB, key), pickle.HIGHEST_PROTOCOL))
            self._write(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
            self._blobs[key] = len(value)
            self._blob_bytes += len(value)
        for key in list(self._blobs):
            if len(self._blobs) <= MAX_BLOBS and self._blob_bytes <= MAX_BLOB_BYTES:
                break
            if key in needed:
                continue
            self._blob_bytes -= self._blobs.pop(key)
            self._write(pickle.dumps((p.FORGET_BLOB, key), pickle.HIGHEST_PROTOCOL))

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
            following = self.job = self.ahead.popleft()
            self.started_at = now
            if following.timeout is not None:
                self.deadline = now + following.timeout
        return job

    def recall(self) -> None:
        """Ask the worker to give back the jobs it has not started (answered by GIVE_BACK)."""
        self.recalling = True
        try:
            self._recall.send_bytes(b"r")
        except OSError:  # it is exiting: its exit hands the jobs back
            pass

    def gave_back(self, ids: list[int]) -> list[Job]:
        """The worker will not run the jobs ``ids``: take them off its hands, in order."""
        self.recalling = False
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
        return back

    def take_ahead(self) -> list[Job]:
        """The jobs sent ahead and not started (the worker is gone), in order."""
        jobs = list(self.ahead)
        self.ahead.clear()
        for job in jobs:
            job.future._worker = None
        return jobs

    def start_helping(self) -> None:
        """Mark that a thread will read this pipe itself (under the dispatcher's lock).

        The pipe that calls it off exists from here on, so the dispatcher can always use it.
        """
        self.helped = True
        if self._helper_poll is None:
            self._helper_wake = os.pipe()
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            poller.register(self._helper_wake[0], select.POLLIN)
            self._helper_poll = poller

    def wait_for_reply(self, timeout: Optional[float]) -> bool:
        """Sleep until the pipe is readable or the dispatcher calls the helper off (or timeout).

        True when there is something to read. Called by a helping thread without the lock.
        """
        milliseconds = None if timeout is None else max(0, math.ceil(timeout * 1000))
        return self.fd in dict(self._helper_poll.poll(milliseconds))

    def call_off_helper(self) -> None:
        """Wake the thread reading this pipe: the dispatcher is taking the worker's exit over."""
        if self.helped and self._helper_wake is not None:
            os.write(self._helper_wake[1], b"x")

    def stop(self) -> None:
        """Ask the worker to exit after its current job; its exit is then expected."""
        self.retiring = True
        try:
            self._write(pickle.dumps((p.STOP,)))
        except OSError:
            pass

    def kill(self, failure: Optional[BaseException] = None) -> None:
        self.failure = failure
        self.retiring = True
        try:
            self.process.kill()
        except (OSError, ValueError):
            pass

    def reap(self) -> Optional[int]:
        """Collect the exited process; returns its exit code (negative: killed by that signal).

        Called once its exit fd fired (or after kill()), so the join only collects it. A timed
        join would wait on the multiprocessing sentinel, which the fork race above can keep shut.
        """
        self.process.join()
        code: Optional[int] = self.process.exitcode
        self.reaped = True
        self.call_off_helper()
        if not self.helped:  # else the helper closes them once it has stopped polling them
            self.close_fds()
        try:
            self.process.close()
        except ValueError:
            pass
        return code

    def close_fds(self) -> None:
        if self._owns_exit_fd:
            os.close(self.exit_fd)
        self.conn.close()
        self._recall.close()
        if self.segments is not None:
            self.segments.close()
        if self._helper_wake is not None:
            for fd in self._helper_wake:
                os.close(fd)
            self._helper_wake = None

    def __repr__(self) -> str:
        job = getattr(self.job, "id", None)
        return f"<WorkerHandle {self.index} pid={self.pid} job={job} ahead={len(self.ahead)}>"


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
