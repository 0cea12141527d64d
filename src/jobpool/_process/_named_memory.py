"""Shared memory without memfd: files in a private directory, each name unlinked once opened.

Where there is no memfd (macOS, BSD; Linux with ``JOBPOOL_PORTABLE=1``), a large buffer goes
into a file that the other side opens by name. Files rather than the alternatives:

- ``multiprocessing.shared_memory`` needs its ``resource_tracker``: one more process, warnings
  at exit, and before Python 3.13 every process that attaches a block also registers it, so the
  first to exit unlinks it under the others. ``shm_open`` itself (``_posixshmem``) is a private
  module, and on macOS its names cannot be listed, so nothing could reclaim what a killed
  program left behind.
- A directory can be listed, removed as a whole by whoever outlives its owner, and paired with
  a lock file that says whether its owner still lives (``flock`` is released by the kernel when
  the owner dies, whatever killed it; a reused pid cannot fool it). On Linux the directory is on
  ``/dev/shm``, which is memory (tmpfs), like a memfd; elsewhere in the temporary directory,
  where the system's file cache holds what is written (not measured: see docs/usage/large-data.md).

**Names and who unlinks them.** Each process that sends large data owns one directory,
``<base>/jobpool-<pid>-<random>/``, mode 0700, and holds ``jobpool-<pid>-<random>.lock`` beside
it locked for its whole life. A job's arguments are the file ``a<job id>``, written at
``submit`` (``os.pwrite``, no mapping): the worker that receives the job opens it and unlinks
the name at once, then maps it (read-only, or copy-on-write with ``writable_arguments``). The
parent keeps its descriptor until the job resolves, as it keeps a memfd, so a job given back
unstarted can be sent again (its name still there), and unlinks the name then if no worker did.
A result is ``r<worker token>-<job id>``, written by the worker into its parent's directory: the
parent opens it as it reads the reply, unlinks the name at once, and copies it into memory of
its own (one copy, see below). Names are made from the job id and the worker's token, never
read from a message, so a worker cannot make its parent open or unlink anything else.

**What is left when something dies.**

- A worker killed while writing a result leaves its file: the parent removes every file of that
  worker's token when it buries the worker (``ParentEnd.close``).
- A parent killed outright leaves its directory: each of its workers, woken by its death notice
  (``_death_notice``), takes the dead parent's lock and removes the directory before it exits;
  a file a worker writes after that has been refused (``_named_end.WorkerEnd.parent_died``).
- Should everything be killed at once (no worker left to clean), the next process that makes a
  directory sweeps the base first: every directory whose lock it can take is a dead owner's.

**What the memfd path guarantees and this one does not.** A memfd is sealed before it leaves
its writer, so nothing can change or truncate what the reader maps. Files cannot be sealed, so
a result is copied into the caller's own memory as it arrives (one copy more than with memfd):
from then on nothing can change it, and nothing can truncate it under the caller (``SIGBUS``).
A job's arguments are mapped in place in the worker: a process of the same user that opened the
file by name before the worker unlinked it could still change them while the job runs.
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import stat
import tempfile
import threading
from typing import Optional

from .._platform import after_fork_in_child
from ._shared_memory import Segment, layout, map_file

try:
    import fcntl
except ImportError:  # Windows: no named store (see _platform.SHARED_FILES)
    fcntl = None  # type: ignore[assignment]

PREFIX = "jobpool-"
LOCK_SUFFIX = ".lock"
_MAX_WRITE = 1 << 30  # write at most this much per call (Linux stops at ~2 GB)
_FLAGS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
# How long a worker whose parent died waits for the dead parent's lock (another worker may be
# removing the directory at that moment); a parent still alive holds it for good.
RECLAIM_WAIT_SECONDS = 2.0


def base_directory() -> str:
    """Where owners make their directories: ``/dev/shm`` (memory) if usable, else the
    temporary directory."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


# --- the directory a process owns ----------------------------------------------------------------


class Directory:
    """This process's directory and the lock that says it lives (see the module docstring)."""

    def __init__(self, base: str) -> None:
        sweep(base)
        while True:
            # os.urandom is what secrets.token_hex reads; importing secrets would load hmac and
            # hashlib into the fork server and every worker for this one name.
            name = f"{PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
            lock_path = os.path.join(base, name + LOCK_SUFFIX)
            lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _FLAGS, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a sweep took it first and removes it: another name
                os.close(lock_fd)
                continue
            try:
                os.mkdir(os.path.join(base, name), 0o700)
            except BaseException:
                os.close(lock_fd)
                _unlink(lock_path)
                raise
            break
        self.path = os.path.join(base, name)
        self.lock_path = lock_path
        self._lock_fd = lock_fd
        self._serial = itertools.count()

    def worker_token(self) -> str:
        """A token of its own for each worker: the names of that worker's results."""
        return f"w{next(self._serial)}"

    def remove(self) -> None:
        """At this process's exit: the directory, then the lock, is gone."""
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            try:
                remove_directory(self.path, self.lock_path)
            finally:
                os.close(fd)

    def forget(self) -> None:
        """In a forked child: the parent's directory is not the child's; its lock is not held."""
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            os.close(fd)


_directory: Optional[Directory] = None
_directory_lock = threading.Lock()


def own_directory() -> Directory:
    """This process's directory, made (after a sweep of dead owners') on first use."""
    global _directory
    with _directory_lock:
        if _directory is None:
            import atexit

            _directory = Directory(base_directory())
            atexit.register(_directory.remove)
        return _directory


def _forget_in_child() -> None:
    global _directory, _directory_lock
    _directory_lock = threading.Lock()
    if _directory is not None:
        _directory.forget()
        _directory = None


after_fork_in_child(_forget_in_child)


# --- reclaiming what dead owners left ------------------------------------------------------------


def sweep(base: str) -> None:
    """Remove every directory in ``base`` whose owner is dead (its lock can be taken), and what
    a remover that died half-way left (a directory without its lock file)."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    present = set(names)
    for name in names:
        if not name.startswith(PREFIX):
            continue
        path = os.path.join(base, name)
        if name.endswith(LOCK_SUFFIX):
            directory = path[: -len(LOCK_SUFFIX)]
            fd = _lock_if_dead(path, wait=None)
            if fd is not None:
                try:
                    remove_directory(directory, path)
                finally:
                    os.close(fd)
        elif name + LOCK_SUFFIX not in present and _ours(path):
            remove_directory(path, None)


def _ours(path: str) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()


def _lock_if_dead(lock_path: str, wait: Optional[float]) -> Optional[int]:
    """The lock file's descriptor, locked, if its owner is dead; else None.

    ``wait``: seconds to wait for a lock held by someone else (another process removing the
    directory); None: do not wait.
    """
    try:
        fd = os.open(lock_path, os.O_RDWR | _FLAGS)
    except OSError:  # gone (removed meanwhile), or not ours
        return None
    try:
        if _lock(fd, wait):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _lock(fd: int, wait: Optional[float]) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        if wait is None:
            return False
    # Held: wait for it in a thread, at most ``wait`` seconds (flock has no timeout). A thread
    # still waiting when this process exits goes with it.
    done = threading.Event()

    def take() -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            done.set()
        except OSError:
            pass

    threading.Thread(target=take, name="jobpool-reclaim", daemon=True).start()
    return done.wait(wait)


def remove_directory(path: str, lock_path: Optional[str]) -> None:
    """Unlink every file in ``path``, then ``path``, then the lock file, which goes last: a
    sweep finds a directory whose removal was cut short by its lock (or by the lock's absence).

    Files a live worker adds meanwhile are removed in further rounds; should the directory
    still not be empty, the lock file stays, and a later sweep finishes the work.
    """
    for _ in range(100):  # a backstop: each round needs files made since the last one
        try:
            names = os.listdir(path)
        except FileNotFoundError:
            break
        except OSError:
            return
        for name in names:
            _unlink(os.path.join(path, name))
        try:
            os.rmdir(path)
            break
        except FileNotFoundError:
            break
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                return
    else:
        return
    if lock_path is not None:
        _unlink(lock_path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# --- segments --------------------------------------------------------------------------------


class NamedSegment(Segment):
    """A file written by this process: its descriptor, and its name while this side owns it.

    ``close()`` closes the descriptor and unlinks the name if still owned (a job's arguments,
    when the job resolves). ``disown()`` gives the name to the other side first (a result, once
    its reply is sent: the parent unlinks it).
    """

    __slots__ = ("path",)

    def __init__(self, fd: int, size: int, path: str) -> None:
        super().__init__(fd, size)
        self.path: Optional[str] = path

    def close(self, _: object = None) -> None:
        owned = self.fd >= 0
        super().close()
        path, self.path = self.path, None
        if owned and path is not None:
            _unlink(path)

    def disown(self) -> None:
        self.path = None

    def ensure_named(self) -> None:
        """Put the contents back under its name if the receiver unlinked it (a worker opened
        the job and then did not run it, so it is sent again): one copy, on a rare path."""
        path = self.path
        if path is None or os.path.exists(path):
            return
        copy = _create(path, self.size)
        try:
            if self.size:
                source = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ)
                try:
                    _write_at(copy, memoryview(source), 0)
                finally:
                    source.close()
        except BaseException:
            os.close(copy)
            _unlink(path)
            raise
        os.close(copy)

    def map(self, writable: bool) -> memoryview:  # not for a segment this process wrote
        raise NotImplementedError


class ReceivedSegment(Segment):
    """A file the other side wrote, opened by this side (its name already unlinked)."""

    __slots__ = ("copy",)

    def __init__(self, fd: int, size: int, copy: bool) -> None:
        super().__init__(fd, size)
        self.copy = copy

    def map(self, writable: bool) -> memoryview:
        """Arguments (worker): mapped in place. Results (parent, ``copy``): copied into memory
        of its own, which nothing else can change or truncate (see the module docstring)."""
        _check_size(self.fd, self.size)
        if not self.copy:
            return map_file(self.fd, self.size, writable)
        memory = mmap.mmap(-1, max(self.size, 1), flags=mmap.MAP_PRIVATE)
        view = memoryview(memory)[: self.size]
        done = 0
        os.lseek(self.fd, 0, os.SEEK_SET)  # its own descriptor, opened for this read
        while done < self.size:
            count = os.readv(self.fd, [view[done : done + _MAX_WRITE]])
            if count <= 0:
                raise OSError(
                    f"the shared memory sent for this job holds {done} bytes where "
                    f"{self.size} were announced, so it is not used"
                )
            done += count
        return view if writable else view.toreadonly()


def _check_size(fd: int, size: int) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size < size:
        raise OSError(
            f"the shared memory sent for this job holds {info.st_size} bytes where {size} were "
            "announced, so it is not used"
        )


def _create(path: str, size: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _FLAGS, 0o600)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        _unlink(path)
        raise
    return fd


def _write_at(fd: int, buffer: memoryview, offset: int) -> None:
    done = 0
    total = buffer.nbytes
    while done < total:
        part = buffer[done : done + _MAX_WRITE] if total - done > _MAX_WRITE else buffer[done:]
        done += os.pwrite(fd, part, offset + done)


def write_file(path: str, buffers: list[memoryview]) -> tuple[NamedSegment, list[int]]:
    """A new file ``path`` holding ``buffers``, and where each one starts (see ``layout``)."""
    offsets, size = layout([buffer.nbytes for buffer in buffers])
    segment = NamedSegment(_create(path, size), size, path)
    try:
        for buffer, offset in zip(buffers, offsets):
            _write_at(segment.fd, buffer, offset)
    except BaseException:
        segment.close()
        raise
    return segment, offsets


def _open_and_unlink(path: str, size: int, copy: bool) -> ReceivedSegment:
    try:
        fd = os.open(path, os.O_RDONLY | _FLAGS)
    except FileNotFoundError:
        raise OSError(
            errno.ENOENT,
            "the shared memory holding this job's data was released before it could be read "
            f"(the job had already been resolved, or {os.path.dirname(path)} was removed)",
        ) from None
    _unlink(path)  # the name's work is done: from now on only descriptors hold the memory
    return ReceivedSegment(fd, size, copy)


def argument_path(directory: str, key: int) -> str:
    return os.path.join(directory, f"a{key}")


# --- each worker's two ends --------------------------------------------------------------------


class ParentEnd:
    """The parent's side of one worker's named segments (what a socket is for memfds)."""

    def __init__(self, directory: Directory) -> None:
        self.path = directory.path
        self.token = directory.worker_token()

    def receive(self, key: int, size: int) -> ReceivedSegment:
        """The worker's result for job ``key``, opened and unlinked."""
        return _open_and_unlink(os.path.join(self.path, f"r{self.token}-{key}"), size, True)

    def close(self) -> None:
        """The worker is gone: remove any result file it left (killed while writing one)."""
        prefix = f"r{self.token}-"
        try:
            names = os.listdir(self.path)
        except OSError:
            return
        for name in names:
            if name.startswith(prefix):
                _unlink(os.path.join(self.path, name))
