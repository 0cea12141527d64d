"""Choose the multiprocessing start method.

``fork`` copies a parent that may hold other threads' locks mid-operation, which can deadlock the
child; Python 3.14 moved its own default away from it for that reason. jobpool defaults to
``forkserver`` where it exists (POSIX) and ``spawn`` elsewhere; ``fork`` is used only when asked.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext
from typing import Optional, Union

START_METHODS = ("spawn", "forkserver", "fork")


def default_start_method() -> str:
    available = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in available else "spawn"


def get_context(start_method: Union[str, BaseContext, None]) -> BaseContext:
    if isinstance(start_method, BaseContext):
        return start_method
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
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        _preload_worker(context)
    return context


def _preload_worker(context: BaseContext) -> None:
    """Have the fork server import the worker module once, so each worker starts warm."""
    preload: Optional[list[str]] = getattr(context, "_forkserver_preload", None)
    try:
        from multiprocessing import forkserver

        current = list(forkserver._forkserver._preload_modules)  # type: ignore[attr-defined]
    except Exception:
        current = preload or []
    if "jobpool._process._worker" not in current:
        context.set_forkserver_preload([*current, "jobpool._process._worker"])
