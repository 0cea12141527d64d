"""Choose the multiprocessing start method.

``fork`` copies a parent that may hold other threads' locks mid-operation, which can deadlock the
child; Python 3.14 moved its own default away from it for that reason. jobpool defaults to
``forkserver`` where it exists (POSIX) and ``spawn`` elsewhere; ``fork`` is used only when asked.
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
    """Make ``context`` start workers that never import the user's ``__main__`` (see _start)."""
    skip_main_in_workers()
    if context.get_start_method() == "forkserver":
        _preload_worker(context)
    return context


def _preload_worker(context: BaseContext) -> None:
    """Have the fork server import the worker module once, so each worker starts warm.

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
    if "jobpool._process._worker" not in wanted:
        wanted.append("jobpool._process._worker")
    if wanted != current:
        context.set_forkserver_preload(wanted)
