"""What this system offers jobpool's process backend, after the testing switches: one place.

Much of what makes the process backend fast and sturdy rests on mechanisms only Linux has. Each
has a fallback, and the fallbacks are what a macOS (or BSD) user runs. This module is the one
place that says which mechanism is there; every other module asks it, at the moment it needs
to know (``_platform.PIDFD``, never a copy taken at import), so a test may turn one off with
``monkeypatch.setattr``. No other module looks at ``sys.platform`` or probes ``os`` for these.

==============  ===========================================  =================================
mechanism       used for                                     without it
==============  ===========================================  =================================
``memfd``       large buffers in anonymous, sealed memfds    named files in a private
                passed with ``SCM_RIGHTS`` (``_shared_memory``)  directory (``_named_memory``)
``pidfd``       the dispatcher's exit fd for a worker, a     pipes only the worker, or only the
                worker's watch on its parent, tree signals   parent, holds (``_death_notice``)
``subreaper``   ``PR_SET_CHILD_SUBREAPER``: detached         detached programs escape to init
                programs stay below their worker
``proc``        the /proc walk that stops a worker's whole   one ``SIGKILL`` to the worker's
                tree; ``advise``'s schedstat and steal time; process group; plain wall clock;
                the workers' CPU demand (``_cpu_demand``)    growth as jobs wait, CPUs or not
``epoll``       the dispatcher's sleep (``_watch``)          a ``selectors`` selector (kqueue,
                                                             else poll, else select)
``populate``    ``MAP_POPULATE``/``MADV_POPULATE_READ``:     pages mapped as they are touched
                a mapping's pages in one pass
``affinity``    ``os.sched_getaffinity``: the CPUs this      ``os.cpu_count()``
                process may use (``advise``)
``cgroups``     a memory cgroup per worker holds a job to    the job's process tree sampled in
                its ``job_memory_limit`` (``_cgroups``);     /proc every 10 ms (``_memory``);
                the CPU quota caps the CPUs a pool counts    the affinity alone
                on (``_cpu_limit``)
``outq``        ``SIOCOUTQ``: what a worker has not read     only jobs of at most 8 KB wait
                yet, so that a map's big chunks wait in its  there (``_send_ahead``)
                socket while it has room (``_send_ahead``)
==============  ===========================================  =================================

**The switches are a testing aid, not a tuning knob.** ``JOBPOOL_PORTABLE=1`` turns every one of
these off at once, so that the process backend runs on Linux exactly the code a POSIX system
without them runs (CI runs the test suite a second time so). ``JOBPOOL_DISABLE=memfd,pidfd``
turns off the ones named, for a test that needs one off and the rest on. Both are read once, when
this module is first imported (a worker process reads them from the environment it inherits);
an unknown name or value is an error, so a typo cannot test the wrong thing in silence.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
from typing import Callable, Optional

try:
    import fcntl
    import termios
except ImportError:  # not a POSIX system
    fcntl = termios = None  # type: ignore[assignment]

#: Every mechanism a switch can turn off, in the order of the table above.
MECHANISMS = (
    "memfd",
    "pidfd",
    "subreaper",
    "proc",
    "epoll",
    "populate",
    "affinity",
    "cgroups",
    "outq",
)

PORTABLE_VARIABLE = "JOBPOOL_PORTABLE"
DISABLE_VARIABLE = "JOBPOOL_DISABLE"


def read_switches(environ: Optional[dict[str, str]] = None) -> frozenset[str]:
    """The mechanisms the environment turns off (``os.environ`` unless given).

    Raises ``ValueError`` naming the variable, the bad value and the accepted ones.
    """
    env = os.environ if environ is None else environ
    portable = env.get(PORTABLE_VARIABLE, "").strip()
    if portable not in ("", "0", "1"):
        raise ValueError(
            f"{PORTABLE_VARIABLE}={portable!r} is not understood: set it to 1 to turn every "
            "Linux-only mechanism off (a testing aid), or to 0 or nothing to leave them on"
        )
    if portable == "1":
        return frozenset(MECHANISMS)
    names = [name.strip() for name in env.get(DISABLE_VARIABLE, "").split(",") if name.strip()]
    unknown = [name for name in names if name not in MECHANISMS]
    if unknown:
        raise ValueError(
            f"{DISABLE_VARIABLE} names {', '.join(map(repr, unknown))}, which jobpool does not "
            f"know; the mechanisms it can turn off are {', '.join(MECHANISMS)}"
        )
    return frozenset(names)


#: The mechanisms turned off by the switches (whether or not this system has them).
DISABLED = read_switches()
#: Every Linux-only mechanism is off (``JOBPOOL_PORTABLE=1``).
PORTABLE = frozenset(MECHANISMS) == DISABLED

_LINUX = sys.platform.startswith("linux")


def _on(name: str, present: bool) -> bool:
    return present and name not in DISABLED


#: Anonymous memfd segments, sealed, their descriptors passed over a ``SOCK_SEQPACKET`` socket.
MEMFD = _on(
    "memfd",
    _LINUX
    and hasattr(os, "memfd_create")
    and hasattr(socket, "SCM_RIGHTS")
    and hasattr(socket, "SOCK_SEQPACKET"),
)
#: ``os.pidfd_open`` (Linux 5.3 and Python 3.9); a kernel may still refuse it (see pidfd_open).
PIDFD = _on("pidfd", hasattr(os, "pidfd_open"))
#: /proc lists every process with its parent, group and session (``_tree``), and schedstat.
PROC = _on("proc", _LINUX and os.path.isdir("/proc/self/task"))
#: ``prctl(PR_SET_CHILD_SUBREAPER)``; useful only where /proc can list what it keeps.
SUBREAPER = _on("subreaper", _LINUX) and PROC
#: ``select.epoll`` for the dispatcher's sleep.
EPOLL = _on("epoll", hasattr(select, "epoll"))
#: ``MAP_POPULATE`` and ``MADV_POPULATE_READ`` (Linux) when mapping shared memory.
POPULATE = _on("populate", _LINUX)
#: ``os.sched_getaffinity``.
AFFINITY = _on("affinity", hasattr(os, "sched_getaffinity"))
#: Memory cgroups (v1 or v2) where the system lets jobpool make them; whether it may is found
#: when a worker first needs one (``_process/_cgroups.controller``). Also the CPU quota of this
#: process's cgroup, read when a process pool is made (``_process/_cpu_limit``).
CGROUPS = _on("cgroups", _LINUX)
#: ``SIOCOUTQ`` on a Unix socket: the bytes written to it that its reader has not read yet.
OUTQ = _on("outq", _LINUX and termios is not None and hasattr(termios, "TIOCOUTQ"))
#: ``os.register_at_fork`` (every POSIX system; not Windows). Not a switch: portable code has it.
FORK_HOOKS = hasattr(os, "register_at_fork")
#: Process groups (``setpgid``, ``killpg``): POSIX. Not a switch: portable code has them.
PROCESS_GROUPS = hasattr(os, "setpgid") and hasattr(os, "killpg")
#: Files shared through a directory, written with ``pwrite`` and locked with ``flock``: the
#: portable shared memory (``_process/_named_memory``). POSIX. Not a switch: portable code has it.
SHARED_FILES = os.name == "posix" and hasattr(os, "pwrite")
#: ``os.writev``: several messages to a worker in one system call (``_process/_frames``). POSIX.
#: Not a switch: portable code has it.
WRITEV = hasattr(os, "writev")


def pidfd_open(pid: Optional[int]) -> Optional[int]:
    """A pidfd for ``pid``, or None: no pidfds here (or turned off), no pid, or the kernel
    refused (gone already, a kernel before 5.3, a seccomp filter)."""
    if not PIDFD or not pid:
        return None
    try:
        return int(os.pidfd_open(pid))  # type: ignore[attr-defined,unused-ignore]
    except OSError:
        return None


def send_buffer(fd: int, wanted: int) -> Optional[int]:
    """Ask for a send buffer of ``wanted`` bytes on the socket ``fd``; the size it has, in the
    kernel's own accounting (what :func:`unsent_bytes` counts in), or None: no ``outq``, or
    the socket refused. Linux doubles what it is asked for, up to ``net.core.wmem_max``."""
    if not OUTQ:
        return None
    try:
        sock = socket.socket(fileno=fd)  # OSError if it is not a socket
    except OSError:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, wanted)
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    except OSError:
        return None
    finally:
        sock.detach()  # the descriptor stays its owner's


def unsent_bytes(fd: int) -> Optional[int]:
    """The bytes written to the socket ``fd`` that its reader has not read yet (with the
    kernel's overhead for them), or None where that cannot be known."""
    if not OUTQ:
        return None
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0])
    except OSError:
        return None


def after_fork_in_child(hook: Callable[[], object]) -> None:
    """Run ``hook`` in every child ``os.fork`` makes (nothing where there is no fork)."""
    if FORK_HOOKS:
        os.register_at_fork(after_in_child=hook)


def selector_type() -> type:
    """The ``selectors`` class the dispatcher sleeps in without epoll: the one
    ``DefaultSelector`` would pick on a system without epoll (kqueue, else poll, else select)."""
    import selectors

    for name in ("KqueueSelector", "PollSelector"):
        found = getattr(selectors, name, None)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return selectors.SelectSelector


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where known), at least 1."""
    if AFFINITY:
        try:
            return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined,unused-ignore]
        except OSError:
            pass
    return os.cpu_count() or 1


def describe() -> dict[str, bool]:
    """Each mechanism: whether jobpool uses it here (for tests and bug reports)."""
    return {
        "memfd": MEMFD,
        "pidfd": PIDFD,
        "subreaper": SUBREAPER,
        "proc": PROC,
        "epoll": EPOLL,
        "populate": POPULATE,
        "affinity": AFFINITY,
        "cgroups": CGROUPS,
        "outq": OUTQ,
    }
