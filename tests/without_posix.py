"""Run by test_platform.py in a child interpreter: ``import jobpool`` and the thread backend
where the POSIX-only parts of the standard library are missing, as on Windows.

The standard library modules jobpool's thread path uses are imported first: their Linux branches
are not what is tested (on Windows they take branches of their own). Then the POSIX-only modules
are made unimportable and the POSIX-only names removed, and only then is jobpool imported.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import mmap
import multiprocessing
import multiprocessing.connection
import multiprocessing.dummy
import multiprocessing.pool
import os
import queue
import random
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import weakref
from typing import Any

PRELOADED = (
    asyncio,
    concurrent.futures,
    logging,
    multiprocessing,
    queue,
    random,
    selectors,
    subprocess,
)
PRELOADED += (threading, weakref)

BLOCKED = [
    *("fcntl", "resource", "termios", "pty", "tty", "pwd", "grp", "syslog"),
    *("posix", "_posixsubprocess", "_posixshmem"),
]
REMOVED: dict[Any, list[str]] = {
    os: [
        *("fork", "forkpty", "register_at_fork", "setpgid", "getpgid", "killpg", "setsid"),
        *("getsid", "setpgrp", "getpgrp", "wait", "wait3", "wait4", "waitid", "WNOHANG"),
        *("sched_getaffinity", "sched_setaffinity", "pidfd_open", "memfd_create", "getuid"),
        *("geteuid", "getgid", "sysconf", "pwrite", "pread", "preadv", "pwritev", "readv"),
        *("writev", "getloadavg", "statvfs", "fchown", "chown", "lchown", "mkfifo", "mknod"),
        *("nice", "pipe2", "posix_spawn", "sync", "ttyname", "openpty", "MFD_CLOEXEC"),
        *("O_CLOEXEC", "O_NOFOLLOW"),
    ],
    signal: [
        *("SIGKILL", "SIGSTOP", "SIGCHLD", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM"),
        *("pthread_kill", "pthread_sigmask", "setitimer", "alarm", "pause", "siginterrupt"),
        *("pidfd_send_signal", "sigwait"),
    ],
    select: ["poll", "epoll", "devpoll", "kqueue"],
    socket: ["AF_UNIX", "SCM_RIGHTS", "SOCK_SEQPACKET", "MSG_NOSIGNAL", "MSG_CMSG_CLOEXEC"],
    mmap: ["MAP_SHARED", "MAP_PRIVATE", "PROT_READ", "PROT_WRITE", "MAP_POPULATE"],
}


def take_posix_away() -> None:
    for name in BLOCKED:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    for module, names in REMOVED.items():
        for name in names:
            if hasattr(module, name):
                delattr(module, name)


def use_the_thread_backend() -> None:
    from jobpool import JobTimeoutError, Pool
    from jobpool.concurrent.futures import ThreadPoolExecutor
    from jobpool.multiprocessing.dummy import Pool as DummyPool

    with Pool(2, backend="thread", max_pending=4, job_timeout=30) as pool:
        assert pool.submit(pow, 2, 10).result(60) == 1024
        assert list(pool.map(abs, range(-5, 0), timeout=60)) == [5, 4, 3, 2, 1]
        release = threading.Event()
        slow = pool.options(timeout=0.05).submit(release.wait, 60)
        try:
            slow.result(60)
            raise AssertionError("the time limit did not fire")
        except JobTimeoutError:
            pass
        release.set()
    with DummyPool(2) as dummy:
        assert dummy.map(abs, [-1, -2]) == [1, 2]
    with ThreadPoolExecutor(2) as executor:
        assert executor.submit(abs, -3).result(60) == 3


def import_every_module() -> list[str]:
    """Import every module of jobpool but the Dask backend's (whose own dependencies are not
    jobpool's to check); what failed, with the error."""
    import importlib
    import pkgutil

    import jobpool

    failed = []
    for module in pkgutil.walk_packages(jobpool.__path__, "jobpool."):
        if "dask" not in module.name:
            try:
                importlib.import_module(module.name)
            except Exception as exc:
                failed.append(f"{module.name}: {exc!r}")
    return failed


if __name__ == "__main__":
    take_posix_away()
    if sys.argv[1:] == ["--import-every-module"]:
        print("failed:", import_every_module())
    else:
        use_the_thread_backend()
        print("ok", " ".join(sorted(m for m in sys.modules if m.startswith("jobpool"))))
