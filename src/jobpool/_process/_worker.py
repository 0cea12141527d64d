"""The worker process: receive a job on its own pipe, run it, send the outcome back, repeat.

It imports only the protocol, serialization and the remote-exception helpers, so a fresh worker
starts fast. It ignores SIGINT (the parent decides what Ctrl-C means and stops its workers), and a
watch thread exits the process when the parent dies, even while a job still runs. The same
thread answers recalls: it hands back the jobs sent ahead that the worker has not started.
"""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections import OrderedDict, deque
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Optional

from .._job import run_chunk
from .._remote import pack_exception
from .._serialization import dumps
from . import _protocol as p
from ._blobs import loads_function
from ._frames import FrameReader, write_frame
from ._large_data import LargeData, discard, receive

EXIT_PARENT_DIED = 70

# The blobs (large bytes/str of functions, see _blobs) this worker holds, by key; the parent
# decides what is added and forgotten.
BLOBS: dict[int, Any] = {}


class _BrokenFunction:
    """Stands in the function table for a function that failed to unpickle here."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


class _Channel:
    """The worker's end of its pipe; sends are locked because log records come from any thread."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._fd = conn.fileno()
        self._lock = threading.Lock()

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
        try:
            state = dict(record.__dict__)
            state["msg"] = record.getMessage()
            state["args"] = None
            if record.exc_info:
                state["exc_text"] = logging.Formatter().formatException(record.exc_info)
            state["exc_info"] = None
            state.pop("message", None)
            self._channel.send((p.LOG, state))
        except Exception:
            self.handleError(record)


def _watch_parent(recall: Connection, inbox: _Inbox, channel: _Channel) -> None:
    """Exit when the parent process is gone, so no worker outlives a killed parent.

    Also answer the parent's recalls (see _ahead), which must be heard while a job runs.
    """
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None) if parent is not None else None
    original_ppid = os.getppid()
    watched: list[Any] = [recall] if sentinel is None else [sentinel, recall]
    while True:
        ready = wait(watched, timeout=1.0) if watched else threading.Event().wait(1.0)
        if sentinel is not None and ready and sentinel in ready:  # type: ignore[operator]
            os._exit(EXIT_PARENT_DIED)
        if ready and recall in ready:  # type: ignore[operator]
            try:
                recall.recv_bytes()
            except (EOFError, OSError):  # the parent closed it: this worker is going away
                watched.remove(recall)
            else:
                channel.send((p.GIVE_BACK, inbox.give_back()))
        if os.getppid() != original_ppid:
            os._exit(EXIT_PARENT_DIED)


def _setup_logging(channel: _Channel, level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):  # inherited by fork: the parent prints instead
        root.removeHandler(handler)
    root.addHandler(_ForwardingHandler(channel))
    root.setLevel(level)


def worker_main(
    conn: Connection,
    recall: Connection,
    setup: tuple[Any, tuple[Any, ...]],
    log_level: int,
    large: Optional[LargeData] = None,
) -> None:
    """Entry point of a worker process (the target of ``multiprocessing.Process``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()
    channel = _Channel(conn)
    inbox = _Inbox(conn, large)
    threading.Thread(
        target=_watch_parent,
        args=(recall, inbox, channel),
        name="jobpool-parent-watch",
        daemon=True,
    ).start()
    _setup_logging(channel, log_level)
    try:
        initializer, initargs = setup
        if isinstance(initializer, bytes):
            initializer = pickle.loads(initializer)
        if initializer is not None:
            initializer(*initargs)
    except BaseException as exc:
        channel.send((p.INIT_FAILED, pack_exception(exc)))
        return
    channel.send((p.READY, os.getpid()))
    _serve(inbox, channel, large)
    sys.stdout.flush()
    sys.stderr.flush()


class _Inbox:
    """The messages from the parent, one ``read`` for all that arrived together.

    Shared with the watch thread, which may take back the jobs not yet started (give_back).
    """

    def __init__(self, conn: Connection, large: Optional[LargeData] = None) -> None:
        self._segments = None if large is None else large.channel
        self._reader = FrameReader(conn.fileno())
        self._waiting: deque[bytes] = deque()
        self._lock = threading.Lock()

    def next(self) -> tuple[Any, Any]:
        """The next message, with the raw frame that follows a DEFINE_FN or DEFINE_BLOB."""
        with self._lock:
            message = pickle.loads(self._next_frame())
            if message[0] == p.DEFINE_FN or message[0] == p.DEFINE_BLOB:
                return message, self._next_frame()
            if len(message) == 5 and type(message[4]) is tuple:  # buffers in shared memory
                message = (*message[:4], receive(self._segments, message[1], message[4]))
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
                if message[0] == p.RUN_CALL or message[0] == p.RUN_CHUNK:
                    ids.append(message[1])
                    if type(message[4]) is tuple:  # its segment's descriptor waits: close it
                        discard(self._segments, message[1])
                    continue
                kept.append(data)
                if message[0] == p.DEFINE_FN or message[0] == p.DEFINE_BLOB:
                    raw = next(frames, None)  # raw bytes, not a message (None: still to come)
                    if raw is not None:
                        kept.append(raw)
            self._waiting = kept
            return ids
        finally:
            self._lock.release()


def _serve(inbox: _Inbox, channel: _Channel, large: Optional[LargeData]) -> None:
    functions: OrderedDict[int, Callable[..., Any]] = OrderedDict()
    blobs = BLOBS
    loads = pickle.loads
    while True:
        try:
            message, extra = inbox.next()
        except (EOFError, OSError):
            return
        tag = message[0]
        if tag == p.STOP:
            return
        if tag == p.DEFINE_FN:
            _define(functions, message[1], extra, blobs)
            continue
        if tag == p.DEFINE_BLOB:
            blobs[message[1]] = loads(extra)
            continue
        if tag == p.FORGET_BLOB:
            blobs.pop(message[1], None)
            continue
        _, job_id, fn_key, fn_bytes, body = message
        try:
            if fn_key is None:
                fn = loads(fn_bytes)
            else:
                fn = functions[fn_key]
                functions.move_to_end(fn_key)
            if type(body) is bytes:
                args = loads(body)
            else:  # its buffers wait in shared memory (see _large_data)
                args = body.load(large is not None and large.writable)
            if tag == p.RUN_CALL:
                value = fn(*args[0], **args[1])
            else:
                value = run_chunk(fn, args[0], args[1])
            reply: tuple[Any, ...]
            if large is None:
                reply = (p.OK, job_id, dumps(value, "the job's result"))
            else:
                reply = (p.OK, job_id, large.dump_result(value, job_id))
        except BaseException as exc:
            reply = (p.RAISED, job_id, pack_exception(exc))
        value = args = None
        channel.send(reply)


def _define(
    functions: OrderedDict[int, Callable[..., Any]], key: int, data: bytes, blobs: dict[int, Any]
) -> None:
    try:
        functions[key] = loads_function(data, blobs)
    except BaseException as exc:
        functions[key] = _BrokenFunction(exc)
    if len(functions) > p.FUNCTION_CACHE_SIZE:
        functions.popitem(last=False)
