"""Fault jobs of the fault campaign (tests/test_fault_campaign.py) that tests/hostile.py and
tests/jobs.py do not have, importable in spawned and forkserver workers.

Jobs that must outlive their call in a way the test controls (a forked child left running, a
hang on the thread backend) wait on a :class:`Tether`: a Unix socket the test listens on. A job
connects, says ``<tag> <pid>``, and blocks until the test releases its tag or closes the tether;
the test learns which jobs started, and every process that waits there, without a sleep.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Any, Optional

# --- the tether: the test's end ------------------------------------------------------------------


class Tether:
    """Test side of :func:`tether`: who arrived (tag -> pid), release by tag, close releases all.

    Several threads may wait on it at once (``wait_started``), each for its own tag, with a
    deadline and an escape (a future that resolved without its job ever arriving, say).
    """

    def __init__(self) -> None:
        import tempfile

        self._dir = tempfile.mkdtemp(prefix="jptether")  # short: Unix socket paths are limited
        self.address = os.path.join(self._dir, "s")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.address)
        self._server.listen(256)
        self._changed = threading.Condition()
        self.arrived: dict[str, int] = {}  # tag -> pid
        self._conns: dict[str, list[socket.socket]] = {}
        self._released: set[str] = set()
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="test-tether", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed
                return
            conn.settimeout(10)  # a client that connects says its line at once
            data = b""
            try:
                while not data.endswith(b"\n"):
                    chunk = conn.recv(256)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            if not data.endswith(b"\n"):
                conn.close()
                continue
            tag, pid = data.decode().split()
            with self._changed:
                self.arrived[tag] = int(pid)
                if self._closing or tag in self._released:
                    _let_go(conn)
                    conn.close()
                else:
                    self._conns.setdefault(tag, []).append(conn)
                self._changed.notify_all()

    def notify(self, *_: Any) -> None:
        """Wake the waiters to look again (a future's done-callback)."""
        with self._changed:
            self._changed.notify_all()

    def wait_started(self, tag: str, escape: Any, timeout: float) -> Optional[int]:
        """The pid of ``tag`` once it arrived; None if ``escape()`` became true first.

        Raises AssertionError at the deadline."""
        with self._changed:
            if not self._changed.wait_for(lambda: tag in self.arrived or escape(), timeout):
                raise AssertionError(f"job {tag} neither started nor ended within {timeout} s")
            return self.arrived.get(tag)

    def release(self, tag: str) -> None:
        with self._changed:
            self._released.add(tag)
            for conn in self._conns.pop(tag, []):
                _let_go(conn)
                conn.close()

    def close(self) -> None:
        import shutil

        with self._changed:
            self._closing = True
            conns = [conn for group in self._conns.values() for conn in group]
            self._conns.clear()
        for conn in conns:
            _let_go(conn)
            conn.close()
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        self._server.close()
        self._thread.join(10)
        shutil.rmtree(self._dir, ignore_errors=True)


def _let_go(conn: socket.socket) -> None:
    try:
        conn.sendall(b"x")
    except OSError:
        pass


# --- the tether: the job's end ----------------------------------------------------------------


def tether(address: str, tag: str) -> None:
    """Say ``<tag> <pid>`` to the test's :class:`Tether` and wait until let go (or it closed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(300)  # a ceiling only: the test releases or closes the tether
        sock.connect(address)
        sock.sendall(f"{tag} {os.getpid()}\n".encode())
        try:
            sock.recv(1)
        except OSError:
            pass


def held(address: str, tag: str, value: Any) -> Any:
    """A job that runs until the test releases it (or kills it); ``value`` then."""
    tether(address, tag)
    return value


def record_pid(directory: str, pid: int) -> None:
    """Note a process a job left behind, for the test to wait for it to be gone."""
    with open(os.path.join(directory, f"pid-{pid}"), "w") as f:
        f.write(str(pid))


# --- forking ------------------------------------------------------------------------------------


def fork_leave_child(address: str, tag: str, directory: str) -> int:
    """Fork; the child waits at the tether (a copy of the worker, holding all of its pipes) and
    then ends; the job returns at once, the child still running. Its pid."""
    pid = os.fork()
    if pid == 0:
        try:
            tether(address, tag)
        finally:
            os._exit(0)
    record_pid(directory, pid)
    return pid


def fork_child_then_hang(address: str, tag: str, directory: str, seconds: float) -> None:
    """Leave a forked child waiting at the tether, then hang (until the time limit kills both)."""
    fork_leave_child(address, tag, directory)
    time.sleep(seconds)


def fork_exec(code: int) -> int:
    """Fork, exec a shell that exits with ``code``; wait for it; its exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            os.execv("/bin/sh", ["sh", "-c", f"exit {code}"])
        finally:
            os._exit(127)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


# --- threads left behind ------------------------------------------------------------------------


def leave_logging_thread(count: int) -> int:
    """Leave a thread that logs ``count`` warnings while later jobs run (their log records go
    up the worker's pipe between the replies); returns at once."""
    import logging

    def chatter() -> None:
        log = logging.getLogger("jobpool_campaign.chatter")
        for i in range(count):
            log.warning("left-behind thread says %d", i)
            time.sleep(0.001)

    threading.Thread(target=chatter, daemon=True).start()
    return count


def leave_thread_until(address: str, tag: str) -> int:
    """Leave a thread (non-daemon) that waits at the tether (thread backend: it must end
    before the test does)."""

    def wait_there() -> None:
        try:
            tether(address, tag)
        except OSError:  # the test closed the tether before this thread got there
            pass

    threading.Thread(target=wait_there).start()
    return 1


# --- descriptors --------------------------------------------------------------------------------


def _fill() -> list[int]:
    filler = []
    try:
        while True:
            filler.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        return filler


def exhaust_and_release() -> int:
    """Open descriptors until none is left, see that a socket cannot be made, close them all."""
    filler = _fill()
    try:
        try:
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
        except OSError:
            pass
        else:
            raise AssertionError("a socket was made with no descriptor left")
        return len(filler)
    finally:
        for fd in filler:
            os.close(fd)


KEPT: list[int] = []  # descriptors a job left open on purpose, in this worker


def exhaust_and_keep() -> int:
    """Leave this worker with no free descriptor (kept until it exits); how many were taken."""
    filler = _fill()
    KEPT.extend(filler)
    return len(filler)


def exhaust_then_large_result(size: int) -> bytes:
    """Return a large result (shared memory) while no descriptor is free; the descriptors stay
    taken (the worker has none left afterwards)."""
    KEPT.extend(_fill())
    return b"r" * size


def close_stdio() -> int:
    """Close descriptors 0, 1 and 2 (later descriptors the worker opens then take them)."""
    for fd in (0, 1, 2):
        try:
            os.close(fd)
        except OSError:  # closed by an earlier job on this worker (or reused, then closed)
            pass
    return 3


# --- signals, exits ---------------------------------------------------------------------------


def ignore_sigterm_and_hang(seconds: float) -> None:
    """Ignore SIGTERM and SIGINT, then hang (only a kill ends it)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    time.sleep(seconds)


def raise_system_exit(code: int) -> None:
    raise SystemExit(code)


def raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def setsid() -> int:
    return os.setsid()


# --- data ---------------------------------------------------------------------------------------


def reverse_bytes(data: bytes) -> bytes:
    """A large argument in, a large result out (both through shared memory)."""
    return bytes(reversed(data))


def double_array(array: Any) -> Any:
    return array * 2


def crash_at(x: int, bad: int) -> int:
    """A map item that ends its worker (``os._exit(9)``) at ``bad``."""
    if x == bad:
        os._exit(9)
    return x * x


def raise_at(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"item {x}")
    return x * x


class Offset:
    """A per_worker object: adds its offset."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def add(self, x: int) -> int:
        return x + self.offset


def refuse_to_build(offset: int) -> Offset:
    raise RuntimeError("the per-worker factory refuses")


def held_at(x: int, bad: int, address: str, tag: str) -> int:
    """A map item that waits at the tether at ``bad`` (past its time limit, or until let go)."""
    if x == bad:
        tether(address, tag)
    return x * x


CAMPAIGN_ONLY_MODULE = "jobpool_campaign_worker_only"


def worker_only_thing(x: Any) -> Any:
    """An object whose class's module exists only in the worker process that made it (never in
    the test process, whatever ran there before)."""
    import sys
    import types

    module = sys.modules.get(CAMPAIGN_ONLY_MODULE)
    if module is None:
        module = types.ModuleType(CAMPAIGN_ONLY_MODULE)
        module.Thing = type("Thing", (), {"__module__": CAMPAIGN_ONLY_MODULE})  # type: ignore[attr-defined]
        sys.modules[CAMPAIGN_ONLY_MODULE] = module
    thing = module.Thing()
    thing.x = x
    return thing


def unloadable_item(x: int, bad: int) -> Any:
    return worker_only_thing(x) if x == bad else x * x


def run_program(code: int) -> int:
    """``sh -c 'exit code'`` through subprocess (the safe way to start a program from a thread)."""
    import subprocess

    return subprocess.call(["/bin/sh", "-c", f"exit {code}"])


def break_worker_descriptor(which: str, how: str) -> str:
    """Close one of the worker's own descriptors, or put /dev/null in its place (see
    ``hostile.worker_descriptors``); one an earlier job on this worker closed stays closed."""
    import hostile

    if how == "null":
        return hostile.null_worker_descriptor(which)
    try:
        return hostile.close_worker_descriptor(which)
    except OSError:  # closed already
        return which
