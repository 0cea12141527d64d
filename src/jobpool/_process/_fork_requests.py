"""The caller's side of jobpool's fork server (``_fork_server``): start it, ask it for workers.

``ServedContext`` is the ``forkserver`` multiprocessing context jobpool starts its workers with:
its ``Process`` is a plain ``multiprocessing`` process whose ``Popen`` asks jobpool's server
instead of the standard library's, so the rest of the pool (``pid``, ``sentinel``, ``join``,
``exitcode``, ``kill``) treats it as any other process. ``multiprocessing.Lock``, ``Queue`` or
``Value`` objects among an initializer's arguments travel as with the standard library's fork
server: pickled while this process "spawns" (``set_spawning_popen``), their descriptors sent
along with the request.

One server per process, started at a pool's first job (``start``: it imports its preload while
the caller goes on) and shared by every pool of the process, as the standard library shares its
own. It ends when this process does (its socket's end of file). A child forked from this process
inherits the record but not the server, which is not its child: the child forgets the record and
closes its copy of the socket (so that the server still ends with the process that started it),
and starts a server of its own when it needs one. A server that died (killed, say) is replaced at
the next request.
"""

from __future__ import annotations

import io
import multiprocessing.process
import multiprocessing.util
import os
import socket
import sys
import threading
from multiprocessing import reduction
from multiprocessing.context import set_spawning_popen
from typing import Any, Optional

from .._platform import after_fork_in_child
from ._fork_server_protocol import HEADER, MAX_FDS, REPLY, receive_exactly

_util: Any = multiprocessing.util  # its private helpers are untyped
try:
    from multiprocessing import context as _contexts
    from multiprocessing import popen_forkserver

    _ForkServerPopen: Any = popen_forkserver.Popen
    _ForkServerContext: Any = _contexts.ForkServerContext
except (ImportError, AttributeError):  # no fork server on this system (Windows): unused there
    _ForkServerPopen = _ForkServerContext = object

#: What the fork server runs: its preload, then its loop (``_fork_server``).
SERVER_MODULE = "jobpool._process._fork_server"


class _Server:
    """This process's fork server: its process and its socket (None until started)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid: Optional[int] = None
        self.socket: Optional[socket.socket] = None
        self._gone: list[int] = []  # servers given up on, reaped once they have exited

    def start(self) -> None:
        """Start the server unless it runs (under ``lock``)."""
        self._gone = [pid for pid in self._gone if not _reaped(pid)]
        if self.pid is not None and self.socket is not None:
            if not _reaped(self.pid):
                return
            self.pid = None  # dead and reaped
            self.forget()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            ours.set_inheritable(False)
            from multiprocessing import forkserver, spawn

            wanted = getattr(forkserver._forkserver, "_preload_modules", None) or []
            preload = [name for name in wanted if isinstance(name, str) and name != "__main__"]
            code = (
                f"import sys; sys.path[:] = {sys.path!r}; "
                f"from {SERVER_MODULE} import serve; serve({theirs.fileno()}, {preload!r})"
            )
            args = [*_util._args_from_interpreter_flags(), "-c", code]
            self.pid = _util.spawnv_passfds(
                spawn.get_executable(), [spawn.get_executable(), *args], [theirs.fileno()]
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.socket = ours

    def forget(self) -> None:
        """Give the server up: closing the socket ends it, if it still runs."""
        if self.socket is not None:
            self.socket.close()
        if self.pid is not None and not _reaped(self.pid):
            self._gone.append(self.pid)
        self.pid = self.socket = None

    def fork(self, payload: bytes, fds: list[int]) -> int:
        """A new worker's pid; raises OSError when the server could not fork one."""
        if len(fds) > MAX_FDS:
            raise ValueError(
                f"a worker's arguments hold {len(fds) - 3} descriptors (multiprocessing locks, "
                f"queues, values...); jobpool's fork server passes at most {MAX_FDS - 3}"
            )
        with self.lock:
            self.start()
            assert self.socket is not None
            try:
                data = HEADER.pack(len(payload)) + payload
                sent = socket.send_fds(self.socket, [data], fds)
                if sent < len(data):
                    self.socket.sendall(data[sent:])
                reply = receive_exactly(self.socket, REPLY.size)
            except OSError:
                self.forget()  # the server is gone, or half a request is in its socket
                raise
        value: int = REPLY.unpack(reply)[0]
        if value < 0:
            raise OSError(-value, f"jobpool's fork server could not start a worker: "
                          f"{os.strerror(-value)}")  # fmt: skip
        return value


def _reaped(pid: int) -> bool:
    """Whether the server ``pid`` has exited (and is reaped now, if it was not yet)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:  # reaped by someone else
        return True


_SERVER = _Server()


def start() -> None:
    """Start the fork server now and return at once: it imports its preload while the caller
    goes on (serializing its first jobs, say) instead of while the first worker waits.

    A failure here (out of descriptors, say) is left for the first worker's start to meet and
    report."""
    try:
        with _SERVER.lock:
            _SERVER.start()
    except Exception:
        pass


def server_pid() -> Optional[int]:
    """The fork server's pid, if this process started one."""
    return _SERVER.pid


def _forget_in_child() -> None:
    global _SERVER
    old, _SERVER = _SERVER, _Server()
    if old.socket is not None:
        try:
            old.socket.close()
        except OSError:
            pass


after_fork_in_child(_forget_in_child)


class ServedPopen(_ForkServerPopen):  # type: ignore[misc]
    """``Process.start`` through jobpool's fork server (see the module doc).

    Exit codes come as the standard library's fork server sends them (``poll``, inherited)."""

    def _launch(self, process_obj: Any) -> None:
        buffer = io.BytesIO()
        reduction.dump(_environment(), buffer)
        set_spawning_popen(self)
        try:
            reduction.dump(
                (
                    process_obj._target,
                    process_obj._args,
                    process_obj._kwargs,
                    process_obj._name,
                    bytes(process_obj.authkey),
                    process_obj._parent_pid,
                    process_obj._parent_name,
                ),
                buffer,
            )
        finally:
            set_spawning_popen(None)
        from multiprocessing import resource_tracker

        tracker = resource_tracker.getfd()  # the worker's too (see _fork_server._become_worker)
        assert tracker is not None  # (getfd starts the tracker)
        status_r, status_w = os.pipe()
        try:
            # The worker's parent sentinel: at end of file when this process is gone.
            alive_r, alive_w = os.pipe()
        except BaseException:  # out of descriptors, say: the start fails leaving none behind
            os.close(status_r)
            os.close(status_w)
            raise
        try:
            self.pid = _SERVER.fork(buffer.getvalue(), [status_w, alive_r, tracker, *self._fds])
        except BaseException:
            os.close(status_r)
            os.close(alive_w)
            raise
        finally:
            os.close(status_w)
            os.close(alive_r)
        self.sentinel = status_r
        self.finalizer = _util.Finalize(self, _util.close_fds, (alive_w, status_r))


def _environment() -> tuple[Any, ...]:
    """What a worker takes from this process as it starts, as multiprocessing's preparation data
    gives it to a child of the standard library's fork server: this process's ``sys.path`` (its
    ``''`` made absolute), ``sys.argv``, working directory, original directory, multiprocessing's
    logging, and its start method if one was set. The server applies what differs from its own.
    """
    from multiprocessing import process, util

    original = process.ORIGINAL_DIR  # type: ignore[attr-defined]
    path = [original if entry == "" else entry for entry in sys.path]
    logger = util._logger  # type: ignore[attr-defined]
    try:
        cwd: Optional[str] = os.getcwd()
    except OSError:  # its directory was removed: the worker keeps the server's
        cwd = None
    return (
        path,
        sys.argv,
        cwd,
        original,
        bool(util._log_to_stderr),  # type: ignore[attr-defined]
        None if logger is None else logger.getEffectiveLevel(),
        multiprocessing.get_start_method(allow_none=True),
    )


class ServedProcess(multiprocessing.process.BaseProcess):
    _start_method = "forkserver"

    @staticmethod
    def _Popen(process_obj: Any) -> ServedPopen:
        return ServedPopen(process_obj)


class ServedContext(_ForkServerContext):  # type: ignore[misc]
    """The ``forkserver`` context whose processes jobpool's own fork server starts."""

    Process = ServedProcess


SERVED = ServedContext()
