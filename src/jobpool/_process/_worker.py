"""The worker process: receive a job on its own pipe, run it, send the outcome back, repeat.

It imports only the protocol, serialization and the remote-exception helpers, so a fresh worker
starts fast. It ignores SIGINT (the parent decides what Ctrl-C means and stops its workers), and a
watchdog thread exits the process when the parent dies, even while a job still runs.
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
from typing import Any, Callable

from .._job import run_chunk
from .._remote import pack_exception
from .._serialization import dumps
from . import _protocol as p
from ._blobs import loads_function
from ._frames import FrameReader, write_frame

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


def _watch_parent() -> None:
    """Exit when the parent process is gone, so no worker outlives a killed parent."""
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None) if parent is not None else None
    original_ppid = os.getppid()
    while True:
        if sentinel is not None:
            if wait([sentinel], timeout=1.0):
                os._exit(EXIT_PARENT_DIED)
        else:
            threading.Event().wait(1.0)
        if os.getppid() != original_ppid:
            os._exit(EXIT_PARENT_DIED)


def _setup_logging(channel: _Channel, level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):  # inherited by fork: the parent prints instead
        root.removeHandler(handler)
    root.addHandler(_ForwardingHandler(channel))
    root.setLevel(level)


def worker_main(conn: Connection, setup: tuple[Any, tuple[Any, ...]], log_level: int) -> None:
    """Entry point of a worker process (the target of ``multiprocessing.Process``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()
    threading.Thread(target=_watch_parent, name="jobpool-parent-watch", daemon=True).start()
    channel = _Channel(conn)
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
    _serve(conn, channel)
    sys.stdout.flush()
    sys.stderr.flush()


class _Inbox:
    """The messages from the parent, one ``read`` for all that arrived together."""

    def __init__(self, conn: Connection) -> None:
        self._reader = FrameReader(conn.fileno())
        self._waiting: deque[bytes] = deque()

    def next(self) -> bytes:
        while not self._waiting:
            self._waiting.extend(self._reader.read())
            if self._reader.eof and not self._waiting:
                raise EOFError
        return self._waiting.popleft()


def _serve(conn: Connection, channel: _Channel) -> None:
    functions: OrderedDict[int, Callable[..., Any]] = OrderedDict()
    blobs = BLOBS
    inbox, loads = _Inbox(conn), pickle.loads
    while True:
        try:
            message = loads(inbox.next())
        except (EOFError, OSError):
            return
        tag = message[0]
        if tag == p.STOP:
            return
        if tag == p.DEFINE_FN:
            _define(functions, message[1], inbox.next(), blobs)
            continue
        if tag == p.DEFINE_BLOB:
            blobs[message[1]] = loads(inbox.next())
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
            args = loads(body)
            if tag == p.RUN_CALL:
                value = fn(*args[0], **args[1])
            else:
                value = run_chunk(fn, args[0], args[1])
            reply = (p.OK, job_id, dumps(value, "the job's result"))
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
