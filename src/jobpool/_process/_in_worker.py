"""The worker process: receive a job on its own pipe, run it, send the outcome back, repeat.

It imports only the protocol, serialization, the remote-exception helpers and _stopping, so a
fresh worker starts fast. It leads a process group of its own and, on Linux, is a child subreaper,
so that stopping it stops every program its jobs started (_stopping). It ignores SIGINT (the
parent decides what Ctrl-C means and stops its workers), and a watch thread exits the process,
with those programs, when the parent dies, even while a job still runs. The same thread answers
recalls: it hands back the jobs sent ahead that the worker has not started.

Only the process that started as the worker speaks on its pipe. A job that calls ``os.fork()``
and returns in the child would bring a second copy of this loop back to the same pipe, to send a
second reply and read the parent's next jobs; so after every job, before its reply is made,
the loop compares ``os.getpid()`` with the worker's own pid, and a copy ends there
(:func:`_end_forked_copy`), as a program whose main function returned (0), raised (1) or called
``sys.exit(n)``. A hook run at fork would catch that too, but it would also end the children
that ``subprocess`` (with ``preexec_fn``) or a job's own fork-started pool must keep, and it
misses a fork made behind Python's back; the pid comparison costs one system call per job.
A forked child that never returns (it execs, or calls ``os._exit``) is not affected.

The worker ends with ``os._exit`` once its loop is over (per_worker instances closed, output
flushed): a thread a job left running, daemon or not, cannot keep it alive, which would hang
``shutdown()`` and the end of the parent's program.
"""

from __future__ import annotations

import _thread
import faulthandler
import functools
import logging
import multiprocessing
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from typing import Any, Callable, NoReturn, Optional

from .. import _main_globals, _platform
from .._execution import BrokenFunction, KeptFunctions, run_to_reply
from .._instances import for_worker_process
from .._protocol import (
    DEFINE_BLOB,
    DEFINE_FN,
    FORGET_BLOB,
    GIVE_BACK,
    INIT_FAILED,
    INIT_LOADING,
    INIT_RUNNING,
    LOG,
    OK,
    RAISED,
    READY,
    RUN_CALL,
    RUN_CHUNK,
    STOP,
)
from .._remote_exceptions import pack_exception, unpack_exception
from ._blobs import loads_function
from ._death_notice import held_here_only
from ._frames import FrameReader, write_frame
from ._large_data import Incoming, LargeData, discard, receive, release_on_parent_death
from ._start import WorkerSetup, stderr_into
from ._stopping import AdoptedZombies, exit_with_tree, prepare_worker

EXIT_PARENT_DIED = 70
# The worker's end of its recall pipe broke (a job closed it, or put another file in its
# place): the worker could no longer answer a recall, and its jobs sent ahead would never be
# handed back; it ends, as a crash of the job it runs.
EXIT_RECALL_LOST = 71
# Where the platform has no pidfd: how often the watch thread compares os.getppid().
PPID_POLL_SECONDS = 1.0
# How long a worker that ends as asked gives multiprocessing's clean-up (a Queue's feeder thread
# sending what a job put on it) before it exits regardless.
FINALIZE_SECONDS = 5.0
# How often, at most, the worker reaps the zombies it adopted (between jobs).
ZOMBIE_SECONDS = 1.0

# The blobs (large bytes/str of functions, see _blobs) this worker holds, by key; the parent
# decides what is added and forgotten.
BLOBS: dict[int, Any] = {}


class _Channel:
    """The worker's end of its pipe; sends are locked because log records come from any thread.

    Only the worker process itself sends: a forked copy (a job forked) ends before it would
    reply (``_serve``), and its log records go to its own stderr (``ours``), so that it cannot
    put a message, or half of one, between the worker's own.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._fd = conn.fileno()
        self._lock = threading.Lock()
        self.pid = os.getpid()

    def ours(self) -> bool:
        """Whether this is the worker process, not a copy a job forked."""
        return os.getpid() == self.pid

    def send(self, message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        with self._lock:
            write_frame(self._fd, data)


class _ForwardingHandler(logging.Handler):
    """Sends log records to the parent, which hands them to its own handlers."""

    def __init__(self, channel: _Channel) -> None:
        super().__init__()
        self._channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        if not self._channel.ours():  # a child a job forked: its records go to its stderr
            if logging.lastResort is not None:
                logging.lastResort.handle(record)
            return
        try:
            state = dict(record.__dict__)
            state["msg"] = record.getMessage()
            state["args"] = None
            if record.exc_info:
                state["exc_text"] = logging.Formatter().formatException(record.exc_info)
            state["exc_info"] = None
            state.pop("message", None)
            self._channel.send((LOG, state))
        except Exception:
            self.handleError(record)


def _watch_parent(recall: Connection, inbox: _Inbox, channel: _Channel) -> None:
    """Exit when the parent process is gone, so no worker outlives a killed parent, taking the
    processes it started with it (_stopping).

    Also answer the parent's recalls (see _send_ahead), which must be heard while a job runs. It
    sleeps on file descriptors only: the recall pipe, whose end of file says the parent died
    (``_death_notice``: only the parent holds its write end); a pidfd of the parent where the
    platform has one (Linux), which becomes readable when the parent exits; and
    multiprocessing's parent sentinel. Where there is no pidfd the thread also compares
    ``os.getppid()`` once a second, for a parent whose write end a fork made in C still holds
    open: the one place a worker polls.
    """
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None) if parent is not None else None
    original_ppid = os.getppid()
    caller = (parent.pid if parent is not None else None) or original_ppid
    pidfd = _platform.pidfd_open(caller)
    deaths = [fd for fd in (pidfd, sentinel) if fd is not None]
    recall_fd = recall.fileno()
    # One poll object for the thread's life: multiprocessing's wait() builds a selector at
    # every call, which cost each worker's start about 0.1 ms of CPU (twice, here).
    watch = select.poll()
    for fd in (*deaths, recall_fd):
        watch.register(fd, select.POLLIN)
    poll_ms = None if pidfd is not None else int(PPID_POLL_SECONDS * 1000)
    while True:
        # A parent that died before we looked: its fds are ready at the first poll.
        ready = {fd for fd, _ in watch.poll(poll_ms)}  # also an fd closed or at end of file
        if any(fd in ready for fd in deaths) or (
            poll_ms is not None and os.getppid() != original_ppid
        ):
            _parent_died(inbox, caller)
        if recall_fd in ready:
            try:
                recall.recv_bytes()
            except EOFError:  # its only write end is gone: the parent died (_death_notice)
                _parent_died(inbox, caller)
            except OSError as exc:
                # A job broke our end (closed it): without recalls the parent would wait for a
                # GIVE_BACK forever.
                _say(f"its recall pipe broke ({type(exc).__name__}: {exc}); a job closed it?")
                exit_with_tree(EXIT_RECALL_LOST)
            channel.send((GIVE_BACK, inbox.give_back()))


def _say(what: str) -> None:
    """A line on the worker's stderr, for the user: why it ends by itself."""
    try:
        os.write(2, f"jobpool worker process {os.getpid()} ends: {what}\n".encode())
    except OSError:  # its stderr is gone too
        pass


def _parent_died(inbox: _Inbox, caller: int) -> NoReturn:
    """Remove what the parent left in shared memory (named segments) and in memory cgroups, then
    exit with every program this worker's jobs started (_stopping)."""
    try:
        release_on_parent_death(inbox.segments)
        if _platform.PROC:
            from ._tree import remove_empty_groups_of

            remove_empty_groups_of(caller)
    finally:
        exit_with_tree(EXIT_PARENT_DIED)


def _initialize(setup: WorkerSetup, channel: _Channel) -> bool:
    """Load and run the initializer; on failure tell the parent why (and return False)."""
    try:
        initializer, initargs = setup.load()
    except BaseException as exc:
        channel.send((INIT_FAILED, INIT_LOADING, pack_exception(exc)))
        return False
    try:
        if initializer is not None:
            initializer(*initargs)
    except BaseException as exc:
        channel.send((INIT_FAILED, INIT_RUNNING, pack_exception(exc)))
        return False
    return True


def _setup_logging(channel: _Channel, level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):  # inherited by fork: the parent prints instead
        root.removeHandler(handler)
    root.addHandler(_ForwardingHandler(channel))
    if root.level != level:  # (setting it empties every logger's cache: 0.1 ms at start)
        root.setLevel(level)


def worker_main(
    conn: Connection,
    recall: Connection,
    setup: WorkerSetup,
    log_level: int,
    startup_stderr: Optional[Connection] = None,
    large: Optional[LargeData] = None,
    exit_writer: Optional[Connection] = None,
) -> None:
    """Entry point of a worker process (the target of ``multiprocessing.Process``).

    It never returns: the process ends with ``os._exit`` (see the module docstring).
    ``exit_writer``: held open until then, never written; its end of file tells the parent
    that this worker exited, where there are no pidfds (``_death_notice``).
    """
    if exit_writer is not None:
        held_here_only(exit_writer)  # a child a job forks must not hold it
    code = 0
    try:
        _work(conn, recall, setup, log_level, startup_stderr, large)
        _run_multiprocessing_finalizers()
    except BaseException:  # a bug here: say so, as multiprocessing would have
        code = 1
        try:
            traceback.print_exc()
        except BaseException:
            pass
    _flush_output()
    os._exit(code)  # exit_writer, still referenced here, is closed by the exit


def _run_multiprocessing_finalizers() -> None:
    """Run what multiprocessing runs when one of its processes ends: above all, a ``Queue``'s
    feeder thread sends what the jobs put on it.

    ``os._exit`` runs none of it, and a job's last items on a queue were lost when its worker
    was stopped right after (one run in ten of a pool whose initializer took a queue). A worker
    that holds none (most) starts no thread; the wait is bounded, so that a feeder blocked on a
    full pipe nobody reads keeps neither the worker nor ``shutdown()`` waiting for ever.
    """
    from multiprocessing import util

    if not util._finalizer_registry:  # type: ignore[attr-defined]
        return
    runner = threading.Thread(
        target=util._run_finalizers,  # type: ignore[attr-defined]
        name="jobpool-finalizers",
        daemon=True,
    )
    runner.start()
    runner.join(FINALIZE_SECONDS)


def _work(
    conn: Connection,
    recall: Connection,
    setup: WorkerSetup,
    log_level: int,
    startup_stderr: Optional[Connection],
    large: Optional[LargeData],
) -> None:
    prepare_worker()  # its own process group; on Linux a child subreaper (_stopping)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A job may start a pool of its own: a worker is a daemon process only so that
    # multiprocessing stops it at the parent's exit, not to forbid it children.
    multiprocessing.current_process()._config["daemon"] = False  # type: ignore[attr-defined]
    instances = for_worker_process()  # what per_worker handles build here
    channel = _Channel(conn)
    _main_globals.adopt()  # (done already, if its fork server did it for all its workers)
    with stderr_into(startup_stderr):
        faulthandler.enable()
        inbox = _Inbox(conn, large)
        # A bare thread (_thread), not a threading.Thread: in a new worker the first
        # threading.Thread costs about 0.5 ms of CPU more to start (the threading module's
        # objects copied on first touch, the wait until it runs), and nothing ever joins or
        # lists this one: it ends with the process (os._exit).
        _thread.start_new_thread(_watch_parent, (recall, inbox, channel))
        _setup_logging(channel, log_level)
        if not _initialize(setup, channel):
            return
    channel.send((READY, os.getpid()))
    _serve(inbox, channel, large, _OwnFile(recall.fileno()))
    instances.close()  # a normal exit (STOP, or the parent closed the pipe): close them


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:  # a stream a job closed or replaced
            pass


def _end_forked_copy(tag: int, data: Any) -> NoReturn:
    """End a copy of the worker that a job forked and that came back into the loop.

    It ends as a program would whose main function did what the job did in that copy:
    returned (exit status 0), raised (its traceback on stderr, status 1) or called
    ``sys.exit(n)`` (status n). It sends nothing to the parent, whose pipe is the worker's.
    """
    code = 0
    if tag == RAISED:
        try:
            exc = unpack_exception(data)
            if isinstance(exc, SystemExit):
                # From its args, as SystemExit makes its code: a library that changes how
                # exceptions pickle (tblib, under distributed) may not bring ``code`` back.
                args = exc.args
                code = _exit_status(args[0] if len(args) == 1 else (args or None))
            else:
                code = 1
                sys.stderr.write(str(getattr(exc.__cause__, "tb", exc)))
        except BaseException:
            code = 1
    _flush_output()
    os._exit(code)


def _exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` ends a program with."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(f"{code}\n")
    except BaseException:
        pass
    return 1


class _InThisProcess:
    """Dumps a job's result into shared memory only in the worker itself: a forked copy ends
    first, before it could pass a segment to the parent on the worker's descriptor channel."""

    __slots__ = ("_dump", "_pid")

    def __init__(self, pid: int, dump: Callable[[Any], Any]) -> None:
        self._pid = pid
        self._dump = dump

    def __call__(self, value: Any) -> Any:
        if os.getpid() != self._pid:
            _end_forked_copy(OK, None)
        return self._dump(value)


class _Inbox:
    """The messages from the parent, one ``read`` for all that arrived together.

    Shared with the watch thread, which may take back the jobs not yet started (give_back).
    """

    def __init__(self, conn: Connection, large: Optional[LargeData] = None) -> None:
        self.segments = None if large is None else large.channel
        self._reader = FrameReader(conn.fileno())
        self._waiting: deque[bytes] = deque()
        self._lock = threading.Lock()

    def next(self) -> tuple[Any, Any]:
        """The next message, with the raw frame that follows a DEFINE_FN or DEFINE_BLOB."""
        with self._lock:
            message = pickle.loads(self._next_frame())
            if message[0] == DEFINE_FN or message[0] == DEFINE_BLOB:
                return message, self._next_frame()
            if len(message) == 5 and type(message[4]) is tuple:  # buffers in shared memory
                message = (*message[:4], receive(self.segments, message[1], message[4]))
            return message, None

    def _next_frame(self) -> bytes:
        waiting = self._waiting
        while not waiting:
            waiting.extend(self._reader.read())
            if self._reader.eof and not waiting:
                raise EOFError
        return waiting.popleft()

    def give_back(self) -> list[int]:
        """Remove the jobs received but not started; their ids.

        Nothing while the main thread holds the inbox: it is then reading the pipe, so it has
        run every job it received, and it runs the ones it reads next.
        """
        if not self._lock.acquire(blocking=False):
            return []
        try:
            self._waiting.extend(self._reader.read_ready())
            kept: deque[bytes] = deque()
            ids: list[int] = []
            frames = iter(self._waiting)
            for data in frames:
                message = pickle.loads(data)
                if message[0] == RUN_CALL or message[0] == RUN_CHUNK:
                    ids.append(message[1])
                    if type(message[4]) is tuple:  # its segment's descriptor waits: close it
                        discard(self.segments, message[1])
                    continue
                kept.append(data)
                if message[0] == DEFINE_FN or message[0] == DEFINE_BLOB:
                    raw = next(frames, None)  # raw bytes, not a message (None: still to come)
                    if raw is not None:
                        kept.append(raw)
            self._waiting = kept
            return ids
        finally:
            self._lock.release()


class _OwnFile:
    """Tells whether a descriptor of the worker's still holds the file it held at start.

    A job may close the worker's end of its recall pipe, or put another file in its place
    (``dup2``). The watch thread would not notice until the next recall (a ``poll`` keeps the
    closed file), and then read the wrong file or nothing: the parent would wait for a
    GIVE_BACK forever. One ``fstat`` after each job catches it, and that job fails (its worker
    ends), not a later one.
    """

    __slots__ = ("_fd", "_id")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._id = self._now()

    def _now(self) -> Optional[tuple[int, int]]:
        try:
            st = os.fstat(self._fd)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def intact(self) -> bool:
        return self._id is not None and self._now() == self._id


def _serve(
    inbox: _Inbox,
    channel: _Channel,
    large: Optional[LargeData] = None,
    recall: Optional[_OwnFile] = None,
) -> None:
    writable = large is not None and large.writable
    pid = os.getpid()
    functions = KeptFunctions()
    blobs = BLOBS
    loads = _main_globals.loads
    zombies = AdoptedZombies()  # reaped between jobs, at most once a second (see _stopping)
    next_reap = time.monotonic() + ZOMBIE_SECONDS
    while True:
        now = time.monotonic()
        if now >= next_reap:
            zombies.tick(now)
            next_reap = now + ZOMBIE_SECONDS
        try:
            message, extra = inbox.next()
        except (EOFError, OSError):
            return
        tag = message[0]
        if tag == STOP:
            return
        if tag == DEFINE_FN:
            functions.keep(message[1], functools.partial(loads_function, extra, blobs))
            continue
        if tag == DEFINE_BLOB:
            blobs[message[1]] = pickle.loads(extra)
            continue
        if tag == FORGET_BLOB:
            blobs.pop(message[1], None)
            continue
        _, job_id, fn_key, fn_bytes, body = message
        try:
            fn = loads(fn_bytes) if fn_key is None else functions.get(fn_key)
        except BaseException as exc:
            fn = BrokenFunction(exc)
        if fn is None:  # the parent and this worker disagree on what it holds: a bug
            fn = BrokenFunction(KeyError(f"this worker does not hold function {fn_key}"))
        if large is None:
            result_tag, data = run_to_reply(tag, fn, body)
        else:  # large buffers through shared memory, both ways (see _large_data)
            load = loads if type(body) is bytes else functools.partial(_load_mapped, writable)
            dump = _InThisProcess(pid, functools.partial(large.dump_result, key=job_id))
            result_tag, data = run_to_reply(tag, fn, body, load, dump)
        fn = body = None
        if os.getpid() != pid:  # the job forked and this is the copy: it must not serve
            _end_forked_copy(result_tag, data)
        if recall is not None and not recall.intact():
            _say("the job closed its recall pipe, or put another file in its place")
            exit_with_tree(EXIT_RECALL_LOST)
        channel.send((result_tag, job_id, data))


def _load_mapped(writable: bool, body: Incoming) -> Any:
    """Arguments whose buffers wait in shared memory, mapped in place (read-only by default)."""
    return _main_globals.loads(body.stream, lambda _: body.load(writable))
