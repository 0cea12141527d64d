"""WorkerHandle: one worker process, its own pipe, and the job it holds.

Because each worker has its own pipe and runs one job at a time, the parent always knows which
job a dead or overdue worker held: only that job fails, and nothing needs acknowledging.
"""

from __future__ import annotations

import math
import os
import pickle
import select
import time
from collections import OrderedDict
from multiprocessing.context import BaseContext
from typing import Any, Optional

from .. import _serialization
from .._job import Call, Job
from . import _protocol as p
from ._blobs import MAX_BLOB_BYTES, MAX_BLOBS, Blob
from ._frames import FrameReader, write_frame
from ._worker import worker_main


class WorkerHandle:
    def __init__(
        self,
        context: BaseContext,
        index: int,
        setup: tuple[Any, tuple[Any, ...]],
        log_level: int,
    ) -> None:
        self.index = index
        self.conn, child_conn = context.Pipe(duplex=True)
        self.process: Any = context.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child_conn, setup, log_level),
            name=f"jobpool-worker-{index}",
            daemon=True,
        )
        if context.get_start_method() == "fork":
            with _serialization.IMPORT_FORK_LOCK:  # not while jobpool imports cloudpickle
                self.process.start()
        else:
            self.process.start()
        child_conn.close()
        self.fd = self.conn.fileno()
        self.reader = FrameReader(self.fd)
        self.exit_fd: int = _exit_fd(self.process)
        self._owns_exit_fd = self.exit_fd != self.process.sentinel
        self.pid: Optional[int] = self.process.pid
        self.ready = False
        self.retiring = False  # sent STOP (recycled or pool closing); its exit is expected
        self.job: Optional[Job] = None
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
        return self.ready and self.job is None and not self.retiring

    def run(self, job: Job) -> None:
        """Send ``job`` to the worker; its time limit starts now, not when it was queued."""
        self.job = job
        job.future._worker = self
        self.deadline = time.monotonic() + job.timeout if job.timeout is not None else None
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
        self._write(pickle.dumps((tag, job.id, key, fn_bytes, job.body), pickle.HIGHEST_PROTOCOL))

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
        job, self.job, self.deadline = self.job, None, None
        self.jobs_done += 1
        if job is not None:
            job.future._worker = None
        return job

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
        if self._helper_wake is not None:
            for fd in self._helper_wake:
                os.close(fd)
            self._helper_wake = None

    def __repr__(self) -> str:
        return f"<WorkerHandle {self.index} pid={self.pid} job={getattr(self.job, 'id', None)}>"


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
