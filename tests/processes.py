"""Watching processes from a test: who descends from whom, waiting for exits, reaping.

A test that runs a child interpreter makes itself a *child subreaper* (Linux), so every process
the child leaves behind (workers, its fork server, its resource tracker) is re-parented to the
test, which waits for each one to exit (on a pidfd) and reaps it.
"""

from __future__ import annotations

import ctypes
import os
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

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
