"""Jobs that misbehave on purpose (issue 23), importable in spawned and forkserver workers.

Each one does what an adversarial user's job might: forks and returns, leaves threads behind,
writes on the worker's own pipe, keeps a worker's shared memory to change it later.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

# --- forking ------------------------------------------------------------------------------------


def fork_and_return() -> int:
    """Issue 23, item 1: ``os.fork(); return 1``. Returns the child's pid in the worker (0 in
    the forked copy), so the test can wait for the copy to be gone."""
    return os.fork()


def fork_child_does(what: str) -> int:
    """Fork; the child returns, raises or calls ``sys.exit(7)``; the job waits for it and
    returns its exit status as ``os.waitpid`` gave it."""
    pid = os.fork()
    if pid == 0:
        if what == "raise":
            raise ValueError("raised in the forked child")
        if what == "exit":
            sys.exit(7)
        return -1  # "return": back into the worker's loop, in the child
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def fork_and_exit_hard(code: int) -> int:
    """Fork; the child ends with ``os._exit(code)`` (the usual way); the job reports it."""
    pid = os.fork()
    if pid == 0:
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def fork_setsid() -> int:
    """What a job that must detach does: fork, ``os.setsid()`` in the child; its exit status
    (0 once it leads a session of its own)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os._exit(0 if os.getsid(0) == os.getpid() else 2)
        except BaseException:
            os._exit(3)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def fork_and_return_large(size: int) -> bytes:
    """Fork; both copies return a large result (shared memory); the worker waits for the copy."""
    pid = os.fork()
    if pid == 0:
        return b"c" * size  # the copy's: must never reach the parent
    os.waitpid(pid, 0)
    return b"w" * size


def fork_in_map_item(x: int) -> int:
    """A map item that forks and returns in both processes (the copy waited for)."""
    if x == 3:
        pid = os.fork()
        if pid == 0:
            return -x
        os.waitpid(pid, 0)
    return x


def read_fifo(path: str) -> str:
    """Block until a writer opens the FIFO ``path`` and closes it; what it wrote."""
    with open(path) as fifo:
        return fifo.read()


# --- threads left behind ------------------------------------------------------------------------


def leaves_thread() -> int:
    """Issue 23, item 3: a non-daemon thread that waits forever."""
    threading.Thread(target=threading.Event().wait).start()
    return os.getpid()


# --- the worker's own pipe ----------------------------------------------------------------------


def _worker_connection() -> Connection:
    """The worker's end of its job pipe, found as any job could find it."""
    for obj in gc.get_objects():
        if type(obj).__name__ == "_Channel" and type(obj).__module__.endswith("_worker"):
            return obj.conn  # type: ignore[no-any-return]
    raise LookupError("no worker channel in this process")


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big", signed=True) + data


def send_on_own_pipe(what: str) -> str:
    """Write something out of turn on the worker's own pipe, then return normally."""
    fd = _worker_connection().fileno()
    if what == "garbage":
        os.write(fd, b"garbage bytes, not a frame")
    elif what == "unpicklable":
        os.write(fd, _frame(b"\x80\x05this is no pickle"))
    elif what == "unknown-tag":
        os.write(fd, _frame(pickle.dumps((99, "what is this"), 5)))
    elif what == "foreign-job":
        os.write(fd, _frame(pickle.dumps((12, 10**9, pickle.dumps("forged")), 5)))
    elif what == "ready-again":
        # A well-formed READY, which only a starting worker may send.
        os.write(fd, _frame(pickle.dumps((10, os.getpid()), 5)))
    elif what == "not-a-tuple":
        os.write(fd, _frame(pickle.dumps("just a string", 5)))
    elif what == "bad-log":
        os.write(fd, _frame(pickle.dumps((14, "a log record is a dict"), 5)))
    elif what == "init-failed":
        os.write(fd, _frame(pickle.dumps((11, 1, b"nonsense"), 5)))
    else:
        raise ValueError(what)
    return what


def reply_twice(value: Any) -> Any:
    """Send this job's own reply ahead of the worker's: the worker's is then a second reply."""
    conn = _worker_connection()
    job_id = _running_job_id()
    os.write(conn.fileno(), _frame(pickle.dumps((12, job_id, pickle.dumps(value)), 5)))
    return value


def _running_job_id() -> int:
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "_serve":
            return int(frame.f_locals["job_id"])
        frame = frame.f_back  # type: ignore[assignment]
    raise LookupError("not running in a worker's loop")


# --- the worker's own descriptors ---------------------------------------------------------------


def worker_descriptors() -> dict[str, int]:
    """The descriptors a worker process serves the pool on, found as any job could find them:
    its job pipe, the pipe the parent recalls jobs sent ahead on, and the socket that carries
    the descriptors of shared-memory segments (when the pool uses shared memory)."""
    found = {"job pipe": _worker_connection().fileno()}
    for obj in gc.get_objects():
        kind = type(obj)
        ours = kind.__name__ == "_Inbox" and kind.__module__.endswith("_in_worker")
        # A socket with memfd; without it (portable mode) named files, and no descriptor.
        segments = getattr(obj, "segments", None) if ours else None
        if segments is not None and hasattr(segments, "fileno"):
            found["segment socket"] = segments.fileno()
        if kind.__name__ == "_OwnFile" and kind.__module__.endswith("_in_worker"):
            found["recall pipe"] = obj._fd  # the worker's check that the pipe is still its own
    return found


def close_worker_descriptor(which: str) -> str:
    """Close one of the worker's own descriptors (see :func:`worker_descriptors`), then return."""
    os.close(worker_descriptors()[which])
    return which


def close_segment_socket_then_return(size: int) -> bytes:
    """Close the worker's shared-memory socket, then return a result large enough to need it."""
    os.close(worker_descriptors()["segment socket"])
    return b"s" * size


def null_worker_descriptor(which: str) -> str:
    """Put /dev/null where one of the worker's own descriptors was (``dup2``), then return."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, worker_descriptors()[which])
    os.close(null)
    return which


# --- descriptors -------------------------------------------------------------------------------


def first_byte_or_crash(data: bytes, i: int) -> int:
    """Issue 23, item 7: every twentieth job crashes its worker."""
    if i % 20 == 19:
        os._exit(3)
    return data[0] + i


def fill_descriptors() -> list[int]:
    """Open /dev/null until this process has no descriptor left; the descriptors."""
    filler = []
    try:
        while True:
            filler.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        return filler


def zombie_without_descriptors() -> int:
    """Leave this worker a zombie child and no free descriptor, and run long enough that it
    looks for zombies right after (it does between jobs, at most every ZOMBIE_SECONDS: a
    clock the job lets pass, not a wait for anything). jobpool's /proc reader is dropped from
    ``sys.modules``, as in a worker that has not needed it yet (a fork-started worker may have
    inherited it from a parent that had). The zombie's pid."""
    import time

    from jobpool._process import _in_worker

    time.sleep(_in_worker.ZOMBIE_SECONDS * 1.1)
    sys.modules.pop("jobpool._process._tree", None)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    FILLER.extend(fill_descriptors())
    return pid


FILLER: list[int] = []  # descriptors taken by zombie_without_descriptors, kept open


# --- shared memory kept by a job --------------------------------------------------------------

KEPT: list[int] = []  # descriptors of result segments reopened by keep_result_segment


def keep_result_segment(size: int) -> Any:
    """Return a large array, and keep its result segment open behind the worker's back, as a
    thread the job left could (``/proc/self/fd``), to change it after the caller has it."""
    import numpy as np

    from jobpool._process import _shared_memory

    real = _shared_memory.write_segment

    def write_and_keep(buffers: Any) -> Any:
        _shared_memory.write_segment = real  # once
        segment, offsets = real(buffers)
        KEPT.append(os.open(f"/proc/self/fd/{segment.fd}", os.O_RDWR))
        return segment, offsets

    _shared_memory.write_segment = write_and_keep
    return np.full(size, 7, dtype=np.uint8)


def keep_result_file(size: int) -> Any:
    """As :func:`keep_result_segment`, for named segments (no memfd): reopen the result's file
    by its name before the parent takes it, to change it after the caller has it."""
    import numpy as np

    from jobpool._process import _named_end

    real = _named_end.WorkerEnd.write_result

    def write_and_keep(self: Any, key: int, buffers: Any) -> Any:
        _named_end.WorkerEnd.write_result = real  # type: ignore[method-assign]  # once
        segment, offsets = real(self, key, buffers)
        KEPT.append(os.open(segment.path, os.O_RDWR))
        return segment, offsets

    _named_end.WorkerEnd.write_result = write_and_keep  # type: ignore[method-assign]
    return np.full(size, 7, dtype=np.uint8)


def die_once_result_written(size: int) -> Any:
    """Return a large array, and die (SIGKILL) right after its file was written, before the
    reply that names it is sent: the file is left for the parent to find."""
    import numpy as np

    from jobpool._process import _large_data

    def die(self: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    _large_data.Outgoing.handed_over = die  # type: ignore[method-assign]
    return np.full(size, 7, dtype=np.uint8)


def attack_kept() -> list[str]:
    """Try to shrink, write and map writable the segments kept; what each attempt did."""
    import mmap

    def truncate(fd: int) -> None:
        os.ftruncate(fd, 0)

    def write(fd: int) -> None:
        os.pwrite(fd, b"X" * 4096, 0)

    def map_writable(fd: int) -> None:
        mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_WRITE).close()

    outcomes = []
    for fd in KEPT:
        for name, attempt in [("truncate", truncate), ("write", write), ("map", map_writable)]:
            try:
                attempt(fd)
                outcomes.append(f"{name} done")
            except OSError as exc:
                outcomes.append(f"{name} refused ({exc.strerror})")
    return outcomes


TAKEN: list[int] = []  # descriptors a job took and kept (see raise_with_no_descriptor_free)


def raise_with_no_descriptor_free(message: str) -> None:
    """Take every free descriptor and keep them, then raise: the traceback must be formatted
    where no source file can be opened and no module imported (``linecache`` imports
    ``tokenize`` on first use since 3.13: forgotten here, so the import is needed again)."""
    import linecache

    sys.modules.pop("tokenize", None)
    linecache.clearcache()
    TAKEN.extend(fill_descriptors())
    raise ValueError(message)


def take_descriptors() -> int:
    """Take every free descriptor and keep them (``release_descriptors`` gives them back), and
    forget the modules jobpool imports only when a result fails to serialize, so that a worker
    that already needed them must import them again; how many were taken."""
    for name in ("jobpool._pickling_advice", "jobpool._remote"):
        sys.modules.pop(name, None)
    TAKEN.extend(fill_descriptors())
    return len(TAKEN)


def release_descriptors() -> int:
    """Give back what ``raise_with_no_descriptor_free`` took; how many."""
    count = len(TAKEN)
    for fd in TAKEN:
        os.close(fd)
    TAKEN.clear()
    return count
