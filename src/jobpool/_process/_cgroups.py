"""A memory cgroup per worker: the kernel holds a job (and every program it starts) to its limit.

Linux only. A worker whose job has a ``job_memory_limit`` is moved into a memory cgroup of its
own, made below the caller's (``<caller's memory cgroup>/jobpool-<caller pid>-<n>``); every
program the job starts is born inside it, so the kernel counts them all and never lets the
group past its limit: at the limit its out-of-memory killer kills a process *of that group*,
never another worker, the caller or an unrelated program. The parent hears of it (cgroup v1:
an eventfd registered on ``memory.oom_control``; v2: ``memory.oom.group`` makes the kernel kill
the whole group, whose exit the dispatcher sees anyway), kills what is left and fails the job
with ``MemoryLimitError``, reading the ``oom_kill`` counter to know it was the limit.

Where no cgroup can be made (not Linux, no memory controller, not allowed to write it, v1 on
Python 3.9 without ``os.eventfd``, v2 where the caller's group cannot have the memory controller
on below it, or turned off: ``JOBPOOL_DISABLE=cgroups``, see ``_platform``), :func:`controller`
says None and the worker's memory is sampled instead (``_memory``).
``JOBPOOL_MEMORY_CGROUP=<directory>`` names another group to make them below (one set up for
it, where v2 has the memory controller on).

Every cgroup made here is removed: when its worker is gone (what its job left running is killed
if the worker was killed, moved up to the caller's cgroup if it ended normally); by the worker
itself when it exits because its parent died (``_tree.leave_jobpool_cgroup``), which also
removes the empty groups of its dead parent (one made just before the parent was killed, its
worker never moved in: ``_tree.remove_empty_groups_of``); and, for a caller that was SIGKILLed
before its workers could, by the next pool that makes one, which removes the empty
``jobpool-<pid>-*`` groups of callers that are gone (:meth:`Controller.sweep`).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import signal
import threading
import time
from typing import Optional

from .. import _platform

_log = logging.getLogger("jobpool")

PREFIX = "jobpool-"
_V1_ROOT = "/sys/fs/cgroup/memory"
_V2_ROOT = "/sys/fs/cgroup"
#: How long a removal is tried again while the killed processes leave the group.
REMOVE_SECONDS = 5.0
#: A v1 group whose peak came this close to its limit hit it (charges come in batches of 64
#: pages per CPU, so the peak may stop short of the limit by less than that).
PEAK_SLACK = 1 << 20


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # as the shell's echo >
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _field(text: str, name: str) -> Optional[int]:
    """The value of ``name`` in a flat keyed file (``memory.events``, ``memory.oom_control``)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def memberships(proc_file: str) -> Optional[list[tuple[list[str], str]]]:
    """The groups a ``/proc/<pid>/cgroup`` file names: (controllers, path) per hierarchy, the
    unified one (v2) with no controllers; None if it cannot be read. Lines that are not
    ``id:controllers:path`` are left out."""
    try:
        lines = _read(proc_file).splitlines()
    except OSError:
        return None
    groups = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            groups.append(([name for name in parts[1].split(",") if name], parts[2]))
    return groups


def own_cgroup_dir(pid: str = "self") -> Optional[tuple[int, str]]:
    """(cgroup version, directory) of ``pid``'s memory cgroup, if it is mounted where we look."""
    groups = memberships(f"/proc/{pid}/cgroup")
    if groups is None:
        return None
    unified = None
    for controllers, path in groups:
        if "memory" in controllers:
            directory = _V1_ROOT + path.rstrip("/")
            if os.path.exists(os.path.join(directory, "memory.limit_in_bytes")):
                return 1, directory
        elif not controllers:
            unified = path
    if unified is not None:
        for root in (_V2_ROOT, _V2_ROOT + "/unified"):
            directory = root + unified.rstrip("/")
            if os.path.exists(os.path.join(directory, "memory.max")):
                return 2, directory
    return None


def oom_kills(version: int, directory: str) -> Optional[int]:
    """The group's count of processes its out-of-memory killer killed (None: not told)."""
    try:
        if version == 1:
            return _field(_read(os.path.join(directory, "memory.oom_control")), "oom_kill")
        return _field(_read(os.path.join(directory, "memory.events")), "oom_kill")
    except OSError:
        return None


def system_oom_kills() -> Optional[int]:
    """The machine's count of processes killed by the out-of-memory killer (Linux 4.13+)."""
    try:
        with open("/proc/vmstat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    at = data.find(b"\noom_kill ")
    if at < 0:
        return None
    end = data.find(b"\n", at + 1)
    try:
        return int(data[at + 10 : end if end >= 0 else None])
    except ValueError:
        return None


_caller_group: Optional[tuple[int, Optional[tuple[int, str]]]] = None  # (pid, its group)


def caller_cgroup() -> Optional[tuple[int, str]]:
    """This process's memory cgroup (version, directory), read once per process (by pid: a
    forked child reads its own): the group its workers start in."""
    global _caller_group
    pid = os.getpid()
    if _caller_group is None or _caller_group[0] != pid:
        _caller_group = (pid, own_cgroup_dir())
    return _caller_group[1]


class Controller:
    """Where this process makes its workers' memory cgroups: below its own memory cgroup."""

    def __init__(self, version: int, parent: str) -> None:
        self.version = version
        self.parent = parent
        self._names = itertools.count()
        self._swept = False

    def make(self, pid: int) -> Optional[WorkerCgroup]:
        """A new cgroup holding process ``pid`` (not limited yet); None if it cannot be made."""
        if not self._swept:
            self._swept = True
            self.sweep()
        path = os.path.join(self.parent, f"{PREFIX}{os.getpid()}-{next(self._names)}")
        try:
            os.mkdir(path)
        except OSError as exc:
            _log.debug("jobpool cannot make memory cgroup %s: %s", path, exc)
            return None
        group = WorkerCgroup(self.version, path)
        try:
            group.prepare(pid)
        except OSError as exc:
            _log.debug("jobpool cannot use memory cgroup %s: %s", path, exc)
            group.remove(kill_left=False)
            return None
        return group

    def sweep(self) -> None:
        """Remove the empty cgroups left by callers that are gone (killed before they could)."""
        try:
            names = os.listdir(self.parent)
        except OSError:
            return
        for name in names:
            if not name.startswith(PREFIX):
                continue
            owner = name[len(PREFIX) :].partition("-")[0]
            if not owner.isdigit() or _alive(int(owner)):
                continue
            try:
                os.rmdir(os.path.join(self.parent, name))
            except OSError:  # something still runs in it: not ours to kill
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerCgroup:
    """One worker's memory cgroup: its limit, whether the kernel stopped it, its removal."""

    def __init__(self, version: int, path: str) -> None:
        self.version = version
        self.path = path
        self.limit: Optional[int] = None
        #: Readable when the group hit its limit (v1: an eventfd); None where the worker's exit
        #: says it (v2's ``memory.oom.group`` kills the whole group).
        self.notify_fd: Optional[int] = None
        self.removed = False
        self._hits = 0  # how often the group had hit its own limit when last looked (v2)
        self.reached: Optional[int] = None  # its peak when it was last seen at its limit

    def prepare(self, pid: int) -> None:
        """Move ``pid`` in and ask to be told when the group runs out (raises OSError)."""
        if self.version == 1:
            eventfd = getattr(os, "eventfd", None)
            if eventfd is None:  # Python 3.9: nothing to wake the dispatcher: sample instead
                raise OSError(errno.ENOSYS, "os.eventfd is missing (Python 3.10+)")
            fd = eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            control = os.open(os.path.join(self.path, "memory.oom_control"), os.O_RDONLY)
            try:
                _write(os.path.join(self.path, "cgroup.event_control"), f"{fd} {control}")
            except OSError:
                os.close(fd)
                raise
            finally:
                os.close(control)
            self.notify_fd = fd
        else:
            _write(os.path.join(self.path, "memory.oom.group"), "1")
            if os.path.exists(os.path.join(self.path, "memory.swap.max")):
                _write(os.path.join(self.path, "memory.swap.max"), "0")
        _write(os.path.join(self.path, "cgroup.procs"), str(pid))

    def set_limit(self, limit: Optional[int]) -> bool:
        """Hold the group to ``limit`` bytes (None: no limit). False if the kernel refused it:
        the group already uses more than ``limit`` and cannot give it back."""
        if limit == self.limit:
            return True
        if self.version == 1:
            text = "-1" if limit is None else str(limit)
            files = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
            if limit is None or (self.limit is not None and limit > self.limit):
                files.reverse()  # swap's limit may never be below memory's
            for name in files:
                try:
                    _write(os.path.join(self.path, name), text)
                except FileNotFoundError:  # no swap accounting: memory alone
                    continue
                except OSError as exc:
                    if exc.errno == errno.EBUSY:
                        return False
                    raise
        else:
            try:
                text = "max" if limit is None else str(limit)
                _write(os.path.join(self.path, "memory.max"), text)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    return False
                raise
        self.limit = limit
        self._forget_hits()
        return True

    def take_notice(self) -> None:
        """Empty the notification (it fired once per out-of-memory event)."""
        if self.notify_fd is not None:
            try:
                os.read(self.notify_fd, 8)
            except OSError:  # nothing there (EAGAIN)
                pass

    def hit_own_limit(self) -> bool:
        """Whether the group hit its own limit since the limit was set, or since last asked:
        not a limit above it (the caller's group), whose out-of-memory events the kernel tells
        it of too. v2 counts the hits (the ``max`` event); v1 does not on every kernel (its
        ``memory.failcnt`` stays 0 on some), so there the group's peak, reset each time, must
        have reached the limit (within :data:`PEAK_SLACK`)."""
        if self.version == 2:
            try:
                hits = _field(_read(os.path.join(self.path, "memory.events")), "max")
            except OSError:
                return False
            if hits is None or hits <= self._hits:
                return False
            self._hits = hits
            self.reached = self.peak()
            return True
        peak = self.peak()
        if self.limit is None or peak is None or peak < self.limit - PEAK_SLACK:
            return False
        self.reached = peak
        self._forget_hits()
        return True

    def _forget_hits(self) -> None:
        """From now on, only new hits of the limit count (see ``hit_own_limit``)."""
        if self.version == 2:
            try:
                self._hits = _field(_read(os.path.join(self.path, "memory.events")), "max") or 0
            except OSError:
                pass
            return
        try:
            _write(os.path.join(self.path, "memory.max_usage_in_bytes"), "0")  # to usage now
        except OSError:
            pass

    def oom_kills(self) -> Optional[int]:
        return oom_kills(self.version, self.path)

    def peak(self) -> Optional[int]:
        """The most the group used, in bytes (v1; v2 kernels before 5.19 do not say)."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int(_read(os.path.join(self.path, name)))
        except (OSError, ValueError):
            return None

    def how(self) -> str:
        """How the limit is held, for ``MemoryLimitError``."""
        kills = self.oom_kills()
        told = f", its oom_kill counter at {kills}" if kills else ""
        control = "memory.oom_control" if self.version == 1 else "memory.events"
        return (
            f"the worker's memory cgroup (v{self.version}) held the job and its programs to "
            f"the limit, and the kernel reported the group out of memory ({control}{told})"
        )

    def remove(self, kill_left: bool) -> None:
        """Remove the group once its worker is gone. What still runs in it is killed
        (``kill_left``: its worker was killed or crashed) or moved up to the caller's group (a
        worker that ended normally leaves its jobs' programs alone). Tried again in a thread
        while killed processes leave it."""
        if self.removed:
            return
        self.removed = True
        if self.notify_fd is not None:
            os.close(self.notify_fd)
            self.notify_fd = None
        if self._try_remove(kill_left):
            return
        thread = threading.Thread(
            target=self._remove_later, args=(kill_left,), name="jobpool-cgroup", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # the interpreter is shutting down
            self._remove_later(kill_left)

    def _try_remove(self, kill_left: bool) -> bool:
        try:
            os.rmdir(self.path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                _log.warning("jobpool could not remove memory cgroup %s: %s", self.path, exc)
                return True
        self._empty(kill_left)
        try:
            os.rmdir(self.path)
            return True
        except OSError:
            return False

    def _empty(self, kill_left: bool) -> None:
        try:
            pids = [int(p) for p in _read(os.path.join(self.path, "cgroup.procs")).split()]
        except (OSError, ValueError):
            return
        up = os.path.join(os.path.dirname(self.path), "cgroup.procs")
        for pid in pids:
            try:
                if kill_left:
                    os.kill(pid, signal.SIGKILL)
                else:
                    _write(up, str(pid))
            except OSError:  # gone meanwhile
                pass

    def _remove_later(self, kill_left: bool) -> None:
        deadline = time.monotonic() + REMOVE_SECONDS
        pause = 0.001
        while time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
            if self._try_remove(kill_left):
                return
        _log.warning("jobpool could not remove memory cgroup %s: processes stay in it", self.path)


_controller: Optional[Controller] = None
_looked = False
_lock = threading.Lock()


def controller() -> Optional[Controller]:
    """Where workers' memory cgroups are made in this process, or None where they cannot be."""
    global _controller, _looked
    with _lock:
        if not _looked:
            _looked = True
            _controller = _find_controller()
        return _controller


def _find_controller() -> Optional[Controller]:
    """Below the caller's own memory cgroup, or below ``JOBPOOL_MEMORY_CGROUP`` (a directory of
    the cgroup tree) when set; nowhere (sample instead) where ``_platform`` says there are none
    (not Linux, or turned off: ``JOBPOOL_DISABLE=cgroups``)."""
    if not _platform.CGROUPS:
        return None
    chosen = os.environ.get("JOBPOOL_MEMORY_CGROUP")
    if chosen:
        if os.path.exists(os.path.join(chosen, "memory.limit_in_bytes")):
            found: Optional[tuple[int, str]] = (1, chosen.rstrip("/"))
        elif os.path.exists(os.path.join(chosen, "cgroup.controllers")):
            found = (2, chosen.rstrip("/"))
        else:
            _log.warning(
                "JOBPOOL_MEMORY_CGROUP=%s is not a memory cgroup; jobpool samples instead", chosen
            )
            return None
    else:
        found = own_cgroup_dir()
    if found is None:
        return None
    version, directory = found
    if version == 1 and getattr(os, "eventfd", None) is None:
        return None
    if version == 2:
        try:
            controllers = _read(os.path.join(directory, "cgroup.subtree_control")).split()
        except OSError:
            return None
        # v2: the memory controller must be on for the groups below; a group that holds
        # processes (the caller's, unless it is the root) cannot turn it on for them, hence
        # JOBPOOL_MEMORY_CGROUP (see docs/long-runs.md).
        if "memory" not in controllers:
            return None
    if not os.access(directory, os.W_OK):
        return None
    return Controller(version, directory)
