"""Stopping a worker stops everything it started: the hooks in the worker and the dispatcher.

When jobpool stops a job (its time limit, ``Pool.kill``, ``terminate``, Ctrl-C, a broken pool),
it kills the job's worker, and the programs the worker started go with it, children and
grandchildren alike, before the job's future fails. When the pool's process dies, each worker
takes its programs with it as it exits. A worker that ends normally (recycled, or at
``shutdown``) leaves alone whatever its jobs left running on purpose.

- ``prepare_worker`` runs first in every worker. The worker leads a process group of its own,
  so one signal reaches it and every program it starts that stays in the group. On Linux it
  also becomes a *child subreaper*: a program that detaches itself (``setsid``, a double fork)
  is re-parented to the worker instead of init, so it stays in the worker's tree, where /proc
  shows it (``_tree``). Being outside the terminal's foreground group, the worker and its
  programs no longer receive the terminal's Ctrl-C or Ctrl-Z (the parent decides, see
  ``_lifecycle``); a terminal on standard input is replaced by /dev/null, since a program in a
  background group that read it would be stopped (``SIGTTIN``).
- ``kill_worker`` (dispatcher side) runs ``_tree.stop_tree`` in a thread, so a slow tree never
  stalls the dispatcher; the worker dies last, and the dispatcher fails the job when it sees the
  worker's exit, as before. Without /proc (macOS, BSD) it kills the worker's group at once.
- ``exit_with_tree`` (the worker's watch thread, parent dead) has a fresh interpreter run
  ``_tree`` from outside the worker's group, so that it can freeze the worker as the parent
  would have; if that cannot start, the worker kills its tree itself, its own group last.
- ``AdoptedZombies`` (the worker, between jobs, at most once a second; an idle worker reaps
  nothing, so nothing polls): a subreaper inherits the zombies of the detached programs that
  end. It reaps only those that cannot be a child of the worker itself:
  a process in a session that is neither the worker's nor its own was forked by someone else.
  Any other zombie may be a child a job still waits for (``subprocess`` would report a wrong
  return code if its status were taken), so it is left to its owner; an orphan among those stays
  a zombie until the worker exits (no CPU, no memory: one process-table entry).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional

from .. import _platform

if TYPE_CHECKING:
    from ._tree import ProcInfo

_log = logging.getLogger("jobpool")
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def _find_prctl() -> Optional[Callable[..., int]]:
    """libc's ``prctl``, or None (a libc without it: detached programs may escape)."""
    import ctypes

    try:
        prctl: Callable[..., int] = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Where a worker is a child subreaper (_platform.SUBREAPER): libc's prctl, looked up once where
# the worker side is imported (the fork server, a spawned worker), so that forked workers
# inherit it; each lookup opens libc again and builds a class (a fifth of a millisecond of a
# worker's start). _tree is imported only when a tree is stopped or a zombie reaped: a spawned
# worker does not pay for it at start.
_PRCTL = _find_prctl() if _platform.SUBREAPER else None


def prepare_worker() -> None:
    """Run first in a new worker process (see the module docstring)."""
    if not _platform.PROCESS_GROUPS:  # Windows: no process groups; only the worker is stopped
        return
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    _detach_terminal_input()
    _become_subreaper()


def _detach_terminal_input() -> None:
    try:
        if not os.isatty(0):
            return
        devnull = os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, 0)
    except OSError:
        pass
    finally:
        os.close(devnull)


def _become_subreaper() -> None:
    if not _platform.SUBREAPER:
        return
    prctl = _PRCTL or _find_prctl()
    if prctl is not None:
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def kill_worker(process: Any, exit_fd: Optional[int]) -> None:
    """Kill the worker ``process`` and everything it started; the worker's exit comes last.

    ``exit_fd`` is the dispatcher's pidfd for the worker, or None; a duplicate is used, because
    the dispatcher closes its own when it reaps the worker.
    """
    pid = process.pid
    if not _platform.PROC or pid is None:
        _kill_group_or_process(process)
        return
    try:
        fd = os.dup(exit_fd) if exit_fd is not None else None
    except OSError:  # out of descriptors: the tree is stopped by pid alone
        fd = None
    thread = threading.Thread(
        target=_stop_tree_in_thread, args=(pid, fd), name="jobpool-stop-tree", daemon=True
    )
    try:
        thread.start()
    except RuntimeError:  # the interpreter is shutting down: no new threads, do it here
        _stop_tree_in_thread(pid, fd)


def _stop_tree_in_thread(pid: int, fd: Optional[int]) -> None:
    try:
        from . import _tree

        _tree.use_pidfds(_platform.PIDFD)
        _tree.stop_tree(pid, fd)
    except BaseException:
        _log.exception("jobpool could not stop the processes of worker %s", pid)
        try:  # the worker at least (stop_tree sends this on its way out, unless it never ran)
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    finally:
        if fd is not None:
            os.close(fd)


def _kill_group_or_process(process: Any) -> None:
    """Where /proc cannot list a tree: the worker's group at once, or the worker alone.

    One ``SIGKILL`` to the group reaches every process in it in the same system call, so the
    worker's exit, which fails the job, cannot come before a program of its group was killed.
    What left the group (a new session or group) is not reached (see docs/usage/programs.md).
    """
    pid = process.pid
    try:
        if pid is not None and _platform.PROCESS_GROUPS and os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
            return
    except OSError:  # already gone
        pass
    try:
        process.kill()
    except (OSError, ValueError):
        pass


def exit_with_tree(code: int) -> NoReturn:
    """Exit the worker (its parent died), taking every process it started with it."""
    try:
        if _platform.PROC:
            from . import _tree

            _tree.use_pidfds(_platform.PIDFD)
            running = [p for p in _tree.descendants(os.getpid()) if not p.exited]
            if running and not _stop_from_outside():
                _tree.stop_tree(os.getpid(), freeze=False)  # kills this process too, last
        else:
            _kill_own_group()
    except BaseException:
        pass
    finally:
        try:
            from . import _tree

            _tree.leave_jobpool_cgroup()
        finally:
            os._exit(code)


def _stop_from_outside() -> bool:
    """Have a fresh interpreter, outside our group, stop us as the parent would have.

    It kills this process last, so this returns only if it could not: False then.
    """
    from . import _tree

    executable = sys.executable
    loader = getattr(_tree, "__loader__", None)
    if not executable or getattr(sys, "frozen", False) or loader is None:
        return False  # a frozen application's executable would start the application
    try:
        source = loader.get_source(_tree.__name__)
        if not source:
            return False
        pidfds = [] if _platform.PIDFD else ["--no-pidfd"]
        helper = subprocess.Popen(
            [executable, "-I", "-S", "-c", source, str(os.getpid()), *pidfds],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # out of our group: our SIGSTOP must not stop it
        )
        helper.wait()
    except (OSError, ImportError, subprocess.SubprocessError):
        pass
    return False


def _kill_own_group() -> None:
    pid = os.getpid()
    try:
        if _platform.PROCESS_GROUPS and os.getpgid(0) == pid:
            os.killpg(pid, signal.SIGKILL)
    except (AttributeError, OSError):
        pass


class AdoptedZombies:
    """Reaps the zombies this worker adopted that cannot be one of its own children.

    The worker calls ``tick`` between jobs, at most once a second. Its cheap look (one
    ``waitid`` that reaps nothing) sees only the first zombie child; when that one must be left
    to its owner, a look through /proc at every zombie child (a few milliseconds) is made at
    most every ``SCAN_SECONDS``, so that one zombie left for its owner does not keep the others.
    """

    SCAN_SECONDS = 30.0

    def __init__(self) -> None:
        self._scanned_at = -math.inf

    def tick(self, now: float) -> None:
        if not _platform.SUBREAPER:  # no adopted zombies (and no /proc to tell them apart)
            return
        try:
            self._tick(now)
        except OSError:
            # No descriptor free (a job took them all), so /proc cannot be read, nor the module
            # that reads it imported: look again next time. Reaping is housekeeping; the worker
            # must not die of it, with the next job.
            pass

    def _tick(self, now: float) -> None:
        while True:
            child = self._first_zombie()
            if child is None:
                return
            if not _adopted(child):
                break
            _reap(child.pid)
        if now - self._scanned_at >= self.SCAN_SECONDS:
            self._scanned_at = now
            self.reap_all()

    @staticmethod
    def _first_zombie() -> Optional[ProcInfo]:
        try:
            status = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None
        if status is None:
            return None
        from ._tree import read_stat

        return read_stat(status.si_pid)

    @staticmethod
    def reap_all() -> None:
        """Reap every adopted zombie child that cannot be this process's own child."""
        from ._tree import descendants

        me = os.getpid()
        for child in descendants(me):
            if child.ppid == me and _adopted(child):
                _reap(child.pid)


def _adopted(child: ProcInfo) -> bool:
    """Whether ``child``, a zombie, was adopted: it cannot have been forked by this process.

    A child forked here is in this process's session, or (after ``setsid``) leads its own; a
    process in any other session was forked by a member of that session.
    """
    return child.exited and child.ppid == os.getpid() and child.sid not in (os.getsid(0), child.pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
