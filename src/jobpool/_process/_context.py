"""Choose the multiprocessing start method.

``fork`` copies a parent that may hold other threads' locks mid-operation, which can deadlock the
child; Python 3.14 moved its own default away from it for that reason. jobpool defaults to
``forkserver`` where it exists (POSIX) and ``spawn`` elsewhere; ``fork`` is used only when asked.

The stdlib keeps one fork server per process, in ``multiprocessing.forkserver._forkserver``. A
child forked from a process that started one inherits that record (its pid, its socket, its
"alive" pipe) but not the server, which is not its child: the stdlib then fails to start a
worker there (``waitpid`` of a process that is not its child). So a forked child forgets the
inherited record (``os.register_at_fork``) and starts a fork server of its own when it needs one,
and the record is checked again when a pool is made, for a fork that ran no hooks.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from multiprocessing.context import BaseContext
from typing import Any, Union

from .._platform import after_fork_in_child
from ._start import skip_main_in_workers

START_METHODS = ("spawn", "forkserver", "fork")


def default_start_method() -> str:
    available = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in available else "spawn"


def get_context(start_method: Union[str, BaseContext, None]) -> BaseContext:
    if isinstance(start_method, BaseContext):
        return prepare_context(start_method)
    method = default_start_method() if start_method is None else start_method
    if not isinstance(method, str):
        raise TypeError(
            f"start_method must be a string or a multiprocessing context, not "
            f"{type(method).__name__}"
        )
    available = multiprocessing.get_all_start_methods()
    if method not in available:
        raise ValueError(
            f"unknown start_method {method!r}; choose one of "
            + ", ".join(repr(m) for m in available)
        )
    return prepare_context(multiprocessing.get_context(method))


def prepare_context(context: BaseContext) -> BaseContext:
    """Make ``context`` start workers that never import the user's ``__main__`` (see _start)."""
    skip_main_in_workers()
    if context.get_start_method() == "forkserver":
        if _inherited_fork_server():
            _forget_fork_server()
        _preload_worker(context)
    return context


def _inherited_fork_server() -> bool:
    """Whether the stdlib's fork server record names a server that is not this process's child
    (inherited through a fork that ran no hooks)."""
    try:
        from multiprocessing import forkserver

        pid = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    except Exception:
        return False
    if pid is None:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # our own server, alive (0) or dead (the stdlib sees it so)
    except ChildProcessError:
        return True
    except OSError:
        pass
    return False


def _forget_fork_server() -> None:
    """Forget the fork server this process inherited from its parent (see the module doc).

    Its "alive" descriptor is closed too: the parent's server then no longer waits for this
    child to exit before it can stop.
    """
    # Not imported: nothing to forget (and a fork, a worker's or a job's own, need not pay
    # for importing it with the resource tracker).
    forkserver = sys.modules.get("multiprocessing.forkserver")
    server: Any = getattr(forkserver, "_forkserver", None)
    if server is None:
        return
    alive = getattr(server, "_forkserver_alive_fd", None)
    if getattr(server, "_forkserver_pid", None) is None and alive is None:
        return  # nothing inherited (or, in a worker the server forked, nothing set yet)
    if alive is not None:
        try:
            os.close(alive)
        except OSError:
            pass
    for name in ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid"):
        setattr(server, name, None)
    if hasattr(server, "_forkserver_authkey"):  # Python 3.14 and later backports
        server._forkserver_authkey = None
    server._lock = threading.Lock()  # the parent's may have been held at the fork


after_fork_in_child(_forget_fork_server)


# What the fork server imports once, so that each worker it forks has it already (see
# _fork_server: the worker's side of jobpool and cloudpickle, imported without collections).
WORKER_PRELOAD = ("jobpool._process._fork_server",)


def start_fork_server() -> None:
    """Start the fork server now and return at once: it imports ``WORKER_PRELOAD`` while the
    caller goes on (serializing its first jobs, say) instead of while the first worker waits.

    Called at the pool's first job: an unused pool starts no process. A failure here (out of
    descriptors, say) is left for the first worker's start to meet and report.
    """
    try:
        from multiprocessing import forkserver

        forkserver.ensure_running()
    except Exception:
        pass


def _preload_worker(context: BaseContext) -> None:
    """Have the fork server import what a worker needs once (``WORKER_PRELOAD``), so each
    worker is a cheap fork that starts warm.

    Nor does it import ``__main__``, multiprocessing's default preload: a script without the
    ``__main__`` guard would run its top level in the fork server, and workers never need it.
    This applies to the fork server jobpool starts; one already running keeps its preload.
    """
    try:
        from multiprocessing import forkserver

        current = list(forkserver._forkserver._preload_modules)  # type: ignore[attr-defined]
    except Exception:
        current = []
    wanted = [name for name in current if name != "__main__"]
    wanted += [name for name in WORKER_PRELOAD if name not in wanted]
    if wanted != current:
        context.set_forkserver_preload(wanted)
