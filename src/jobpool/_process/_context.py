"""Choose the multiprocessing start method.

``fork`` copies a parent that may hold other threads' locks mid-operation, which can deadlock the
child; Python 3.14 moved its own default away from it for that reason. jobpool defaults to
``forkserver`` where it exists (POSIX) and ``spawn`` elsewhere; ``fork`` is used only when asked.

``forkserver`` workers come from jobpool's own fork server (``_fork_requests``), whose children
go straight to the worker's code; a ``forkserver`` context passed in is served by it too.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext
from typing import Union

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
    """Make ``context`` start workers that never import the user's ``__main__`` (see _start);
    ``forkserver`` through jobpool's own fork server."""
    skip_main_in_workers()
    if context.get_start_method() == "forkserver":
        # Imported here: a process that never uses a fork server (workers under fork, a job's
        # own forks) need not pay for multiprocessing's fork server modules.
        from . import _fork_requests

        return _fork_requests.SERVED
    return context


def start_fork_server() -> None:
    """Start the fork server now and return at once (see ``_fork_requests.start``).

    Called at the pool's first job: an unused pool starts no process."""
    from . import _fork_requests

    _fork_requests.start()
