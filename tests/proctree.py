"""Helpers for tests that watch processes through /proc (Linux): who is below whom, who is
still running, reaping what the test adopted as a child subreaper, and a child interpreter
whose output is read line by line.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import IO, Optional

import pytest

from conftest import WAIT

PR_SET_CHILD_SUBREAPER = 36


def _stat(pid: int) -> Optional[tuple[str, int]]:
    """(state, ppid) of ``pid``, or None if it no longer exists (reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
    return fields[0], int(fields[1])


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                children.setdefault(stat[1], []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (not exited): a zombie has exited, it only waits to be reaped."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def wait_exited(pids: set[int], timeout: float) -> set[int]:
    """Wait until every pid has exited; returns those still running at the deadline."""
    deadline = time.monotonic() + timeout
    fds = {}
    for pid in pids:
        try:
            fds[pid] = os.pidfd_open(pid)  # readable once the process has exited
        except (ProcessLookupError, AttributeError, OSError):
            pass
    try:
        running = {pid for pid in pids if alive(pid)}
        while running and time.monotonic() < deadline:
            watch = [fds[pid] for pid in running if pid in fds]
            if watch:
                select.select(watch, [], [], max(0.0, deadline - time.monotonic()))
            else:  # no pidfd support: look again shortly
                time.sleep(0.01)
            running = {pid for pid in running if alive(pid)}
        return running
    finally:
        for fd in fds.values():
            os.close(fd)


def reap(pids: set[int], timeout: float = WAIT) -> set[int]:
    """Reap the pids that were re-parented to us; returns those that still exist at the end."""
    deadline = time.monotonic() + timeout
    left = set(pids)
    while left and time.monotonic() < deadline:
        wait_exited(left, max(0.0, deadline - time.monotonic()))
        for pid in list(left):
            stat = _stat(pid)
            if stat is None:
                left.discard(pid)
            elif stat[0] == "Z" and stat[1] == os.getpid():
                os.waitpid(pid, 0)
                left.discard(pid)
        if left:
            time.sleep(0.01)  # a zombie whose re-parenting to us is still under way
    return left


def kill_and_reap(pids: set[int]) -> set[int]:
    """SIGKILL every one of ``pids`` still there and reap those re-parented to us; returns
    those that still exist at the end (see reap)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return reap(pids)


def assert_no_zombies() -> None:
    zombies = [pid for pid in descendants(os.getpid()) if (_stat(pid) or ("",))[0] == "Z"]
    assert not zombies, f"zombie processes under the test run: {zombies}"


@contextmanager
def subreaper() -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) is not available")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


# The scripts stand for programs run from a terminal, where Ctrl-C raises KeyboardInterrupt. A
# test run started in the background by a shell without job control (`pytest &` in a script)
# starts with SIGINT ignored, its children inherit that, and Python then installs no handler:
# every Ctrl-C test failed that way, the pools being fine.
SIGINT_AS_FROM_A_TERMINAL = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
)


class Child:
    """A child interpreter running ``script``; its stdout is read line by line in a thread.

    ``new_session``: it leads a session (and process group) of its own, so the test can signal
    its whole group as a terminal would.
    """

    def __init__(
        self, script: str, env: Optional[dict[str, str]] = None, new_session: bool = False
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SIGINT_AS_FROM_A_TERMINAL + script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=new_session,
        )
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self.stderr = ""
        self._out = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out.start()
        self._err.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def worker_pids(self, count: int) -> set[int]:
        """The pids of ``count`` workers that printed ``WORKER <pid>``, once it printed WAITING."""
        return self.read_pids("WORKER", count)

    def read_pids(self, tag: str, lines: int) -> set[int]:
        """The pids on ``lines`` lines ``<tag> <pid> <pid>...``, once it also printed WAITING."""
        pids: set[int] = set()
        seen = 0
        waiting = False
        deadline = time.monotonic() + WAIT
        while seen < lines or not waiting:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"child printed no {tag} lines; stderr:\n{self.stderr}")
            if line is None:
                self.proc.wait(WAIT)
                self._err.join(WAIT)
                raise AssertionError(f"child ended early; stderr:\n{self.stderr}")
            if line.startswith(f"{tag} "):
                pids.update(int(pid) for pid in line.split()[1:])
                seen += 1
            elif line == "WAITING":
                waiting = True
        return pids

    def finish(self) -> int:
        code = self.proc.wait(WAIT)
        self._out.join(WAIT)
        self._err.join(WAIT)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()


def zombie_children(exclude: Collection[int] = ()) -> set[int]:
    """This process's children that have exited and wait to be reaped, but those in ``exclude``."""
    me = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in exclude:
            stat = _stat(int(entry))
            if stat is not None and stat == ("Z", me):
                found.add(int(entry))
    return found


def reap_orphans(exclude: Collection[int] = ()) -> None:
    """Reap what this test adopted as a subreaper (not the pools' own workers, which their
    dispatcher reaps, nor ``exclude``)."""
    ours = {child.pid for child in multiprocessing.active_children()} | set(exclude)
    for pid in zombie_children(ours):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


MARK = "JOBPOOL_TEST_PROGRAMS"


class MarkedPrograms:
    """The programs a test's jobs start, each with ``MARK=<token>`` in its environment.

    The test finds every one of them in /proc, wherever it was re-parented, even those whose pid
    it never learnt (a program that keeps forking).
    """

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.env = {MARK: self.token}
        self._entry = f"{MARK}={self.token}".encode()

    def running(self) -> set[int]:
        """The marked processes that have not exited (a stopped one counts as running)."""
        found = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    environ = f.read()
            except OSError:  # gone, or another user's
                continue
            if self._entry in environ.split(b"\0") and alive(int(entry)):
                found.add(int(entry))
        return found

    def wait_running(self, pids: set[int]) -> bool:
        """Whether every one of ``pids`` shows as a running marked program, within ``WAIT``.

        A program that has just been started can read as unmarked for a moment (/proc shows it
        half-way through exec): the check is repeated until it holds or the deadline passes.
        """
        deadline = time.monotonic() + WAIT
        while not pids <= self.running():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)  # polling /proc for a state: there is nothing to wait on
        return True

    def kill_all(self) -> None:
        """Kill every marked process still running (clean-up, whatever the test found)."""
        for _ in range(100):  # a program that keeps forking may need a few passes
            pids = self.running()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_exited(pids, WAIT)


@contextmanager
def marked_programs() -> Iterator[MarkedPrograms]:
    """Marked programs, with this test a subreaper so that whatever they leave comes back to
    it; on the way out every one still running is killed and every orphan reaped."""
    with subreaper():
        programs = MarkedPrograms()
        try:
            yield programs
        finally:
            programs.kill_all()
            reap_orphans()
