"""Find every process a worker started, through /proc, and stop them all, the worker last.

A job may run programs (``ffmpeg``, a compiler, a browser). Killing only its worker would leave
them running, re-parented to init. ``stop_tree`` kills the worker's whole tree instead:

1. **Freeze.** One ``SIGSTOP`` to the worker's process group (each worker leads one, see
   ``_stopping``) stops the worker, so the job starts nothing more, and every program still in
   the group. The kernel hands a group signal that arrives during a ``fork`` to the new child
   too, so no program in the group can outrun it by forking.
2. **Kill in rounds.** List the worker's descendants from /proc and ``SIGKILL`` each live one (a
   whole group at once when the tree made that group), then wait until each has died. Repeat
   until a listing shows nothing but processes already killed. Programs that left the group
   (``setsid``, a double fork) run until a round finds them: a ``SIGKILL`` cancels a fork under
   way, and the children of a killed process are re-parented to the worker (a child subreaper,
   still alive though stopped), so the next round finds them. Waiting for each round to die
   before listing again is what makes an empty listing mean an empty tree.
3. **The worker last.** Its exit is what fails the job's future, so the future fails only
   after everything the worker started is gone.

Signals go through pidfds where the kernel has them, so a pid that was freed and reused between
the listing and the signal is never hit. This module imports only the standard library and
nothing from jobpool: a worker whose parent died runs it as a script in a fresh interpreter
(``python -I -S -c <this source> <worker pid>``), from outside the worker's group, so that it can
freeze the worker as the parent would have.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections.abc import Collection, Iterable
from typing import NamedTuple, Optional

# How long the whole procedure may wait for killed processes to die. A process in uninterruptible
# sleep (state D, e.g. stuck on a network file system) dies only when that call returns.
STOP_SECONDS = 5.0
MAX_ROUNDS = 100  # a backstop only: each round needs processes made after the last one

_pidfd_open = getattr(os, "pidfd_open", None)
_pidfd_send_signal = getattr(signal, "pidfd_send_signal", None)


def use_pidfds(allowed: bool) -> None:
    """Signal and wait through pidfds only if ``allowed`` (jobpool's ``_platform.PIDFD``; this
    module imports nothing of jobpool's, so it is told)."""
    global _pidfd_open, _pidfd_send_signal
    _pidfd_open = getattr(os, "pidfd_open", None) if allowed else None
    _pidfd_send_signal = getattr(signal, "pidfd_send_signal", None) if allowed else None


class ProcInfo(NamedTuple):
    """One line of /proc/PID/stat, the fields this module needs."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str  # R, S, D, T, Z...
    start: int  # clock ticks after boot: with the pid, it names one process, not a reuse of its pid

    @property
    def exited(self) -> bool:
        return self.state in ("Z", "X", "x")

    @property
    def key(self) -> tuple[int, int]:
        return self.pid, self.start


def read_stat(pid: int) -> Optional[ProcInfo]:
    """What /proc says about ``pid``, or None if it no longer exists (reaped)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        fields = data[data.rindex(b")") + 2 :].split()  # the name may hold spaces and ")"
        state = fields[0].decode()
        return ProcInfo(pid, int(fields[1]), int(fields[2]), int(fields[3]), state, int(fields[19]))
    except (ValueError, IndexError):
        return None


def children_by_parent() -> dict[int, list[ProcInfo]]:
    """Every process /proc lists, by its parent's pid. One pass over /proc: per-thread
    ``children`` files are not built into every kernel."""
    below: dict[int, list[ProcInfo]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = read_stat(int(name))
            if info is not None:
                below.setdefault(info.ppid, []).append(info)
    return below


def descendants(
    root: int,
    exclude: Collection[int] = (),
    below: Optional[dict[int, list[ProcInfo]]] = None,
) -> list[ProcInfo]:
    """Every process below ``root`` (not ``root``), parents before children; ``exclude`` and
    what is below it left out. ``below``: a listing by :func:`children_by_parent` to use."""
    if below is None:
        below = children_by_parent()
    found: list[ProcInfo] = []
    seen = {root, *exclude}  # a listing is not atomic: a reused pid could close a loop
    todo = [root]
    while todo:
        for child in below.get(todo.pop(), ()):
            if child.pid not in seen:
                seen.add(child.pid)
                found.append(child)
                todo.append(child.pid)
    return found


class _Target:
    """A process to signal, pinned by a pidfd where the kernel offers them."""

    def __init__(self, info: ProcInfo) -> None:
        self.info = info
        self.fd: Optional[int] = None
        self.gone = False
        if _pidfd_open is None:
            return
        try:
            fd = _pidfd_open(info.pid)
        except ProcessLookupError:
            self.gone = True
            return
        except OSError:  # a kernel before 5.3, or a seccomp filter: signal by pid
            return
        if self._same_process():
            self.fd = fd
        else:  # the pid was reused since the listing: not our process
            os.close(fd)
            self.gone = True

    def _same_process(self) -> bool:
        now = read_stat(self.info.pid)
        return now is not None and now.start == self.info.start

    def send(self, signum: int) -> None:
        if self.gone:
            return
        if self.fd is None and not self._same_process():  # by pid: checked just before
            return
        _send(self.info.pid, self.fd, signum)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _killpg(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
        return True
    except OSError:  # no such group (left it, or gone)
        return False


def _send(pid: int, fd: Optional[int], signum: int) -> None:
    """Signal ``pid``, through its pidfd ``fd`` when there is one."""
    try:
        if fd is not None and _pidfd_send_signal is not None:
            _pidfd_send_signal(fd, signum)
        else:
            os.kill(pid, signum)
    except OSError:  # exited meanwhile, or not ours to signal (another user's: sudo)
        pass


def _tree_owns_group(info: ProcInfo, root: ProcInfo, tree: Collection[int]) -> bool:
    """Whether ``info``'s whole process group may be killed with one signal.

    Only a group the tree made: its leader is in the tree, or it lies in a session the tree
    made (the worker's own session is its parent's, shared with the user's program). Never the
    worker's own group (the worker dies last) nor the caller's.
    """
    group = info.pgid
    if group <= 1 or group == root.pgid or group == os.getpgrp():
        return False
    return group in tree or info.sid != root.sid


def _wait_dead(targets: Iterable[_Target], deadline: float) -> None:
    """Until every target has exited (zombie or reaped), or the deadline."""
    pending = [t for t in targets if not t.info.exited and not t.gone]
    polled = [t.fd for t in pending if t.fd is not None]
    if polled:
        poller = select.poll()
        for fd in polled:
            poller.register(fd, select.POLLIN)  # a pidfd is readable once its process exited
        left = len(polled)
        while left and time.monotonic() < deadline:
            wait_ms = max(1, int((deadline - time.monotonic()) * 1000))
            for fd, _ in poller.poll(wait_ms):
                poller.unregister(fd)
                left -= 1
    pause = 0.0005
    for target in pending:  # no pidfd: look in /proc, less and less often
        if target.fd is not None:
            continue
        while time.monotonic() < deadline:
            now = read_stat(target.info.pid)
            if now is None or now.exited or now.start != target.info.start:
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.01)


def stop_tree(
    root: int,
    root_fd: Optional[int] = None,
    *,
    exclude: Collection[int] = (),
    freeze: bool = True,
    timeout: float = STOP_SECONDS,
) -> None:
    """Kill every process below ``root``, then ``root`` (see the module docstring).

    ``root_fd`` is a pidfd for ``root`` (the dispatcher has one). ``freeze=False`` is for a
    process stopping its own tree: it cannot stop itself, so its group (itself included) is
    killed at once at the end instead. Returns after ``root`` was sent its ``SIGKILL``; bounded
    by ``timeout`` however the tree behaves.
    """
    deadline = time.monotonic() + timeout
    seen: set[tuple[int, int]] = set()
    first = read_stat(root)
    leads_group = first is not None and first.pgid == root
    try:
        if first is None or first.exited:
            # It died by itself: what it started was re-parented out of our reach, but for what
            # is still in its group, killed below (a group keeps its id while it has members).
            return
        if freeze and not (leads_group and _killpg(root, signal.SIGSTOP)):
            _send(root, root_fd, signal.SIGSTOP)
        for _ in range(MAX_ROUNDS):
            tree = descendants(root, exclude)
            fresh = [info for info in tree if info.key not in seen]
            if not fresh or time.monotonic() >= deadline:
                break
            seen.update(info.key for info in fresh)
            pids = {info.pid for info in tree}
            for group in {i.pgid for i in fresh if _tree_owns_group(i, first, pids)}:
                _killpg(group, signal.SIGKILL)
            _kill_and_wait([_Target(info) for info in fresh if not info.exited], deadline)
    finally:
        now = read_stat(root)
        if leads_group and (not freeze or now is None or now.exited):
            # Our own group at once (freeze=False), or the worker died by itself after we
            # stopped its group: what we stopped must not stay stopped.
            _killpg(root, signal.SIGKILL)
        _send(root, root_fd, signal.SIGKILL)


def _kill_and_wait(targets: list[_Target], deadline: float) -> None:
    try:
        for target in targets:
            target.send(signal.SIGKILL)
        _wait_dead(targets, deadline)
    finally:
        for target in targets:
            target.close()


def leave_jobpool_cgroup(tries: int = 1) -> None:
    """If this process is in a worker's memory cgroup (``jobpool-...``, see ``_cgroups``): move
    up to the group above and remove it, so that a worker whose parent died leaves none behind.
    It stays if something else still runs in it (a process killed a moment ago may take a few
    milliseconds to leave: ``tries`` removals, 10 ms apart)."""
    directory = _memory_cgroup()
    if directory is None or not os.path.basename(directory).startswith("jobpool-"):
        return
    try:
        with open(os.path.join(os.path.dirname(directory), "cgroup.procs"), "w") as up:
            up.write(str(os.getpid()))
    except OSError:
        return
    for attempt in range(tries):
        try:
            os.rmdir(directory)
            break
        except OSError:
            if attempt + 1 < tries:
                time.sleep(0.01)


def remove_empty_groups_of(caller: int) -> None:
    """Remove the empty memory cgroups that ``caller``, now dead, made for its workers.

    The caller makes a worker's group, then moves the worker in: killed between the two, it
    leaves a group that none of its workers is in, so none would remove it. Any of them can, as
    it exits: a group that still holds a process is not removed (``rmdir`` refuses), and its
    own worker removes it."""
    directory = _memory_cgroup()
    if directory is None:
        return
    if os.path.basename(directory).startswith("jobpool-"):
        directory = os.path.dirname(directory)  # this worker's group is in the caller's
    prefix = f"jobpool-{caller}-"
    try:
        names = [name for name in os.listdir(directory) if name.startswith(prefix)]
    except OSError:
        return
    for name in names:
        try:
            os.rmdir(os.path.join(directory, name))
        except OSError:
            pass


def _memory_cgroup() -> Optional[str]:
    """The directory of this process's memory cgroup (v1's memory hierarchy, or v2's)."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    unified = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):  # v1 (hybrid systems list v2 too)
            return "/sys/fs/cgroup/memory" + path
        if controllers == "":
            unified = "/sys/fs/cgroup" + path
    return unified


def _main(argv: list[str]) -> None:
    """Run by a worker whose parent died, in a fresh interpreter outside the worker's group.

    ``argv``: the worker's pid, then ``--no-pidfd`` where jobpool's pidfds are turned off.
    """
    root = int(argv[1])
    use_pidfds("--no-pidfd" not in argv[2:])
    fd = None
    if _pidfd_open is not None:
        try:
            fd = _pidfd_open(root)
        except OSError:
            pass
    try:
        stop_tree(root, fd, exclude={os.getpid()})
    finally:
        if fd is not None:
            os.close(fd)
        leave_jobpool_cgroup(tries=100)  # the worker's, once what it held has left it


if __name__ == "__main__":
    _main(sys.argv)
