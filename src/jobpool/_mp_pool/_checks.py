"""Argument checks of jobpool.multiprocessing's pools: the stdlib's errors, with messages that
say what was wrong."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Optional

from .._intake import check_positive_int


def check_processes(processes: Optional[int]) -> int:
    if processes is None:
        count = getattr(os, "process_cpu_count", os.cpu_count)()  # the stdlib's, per version
        return int(count or 1)
    return int(check_positive_int("processes", processes) or 1)


def check_initializer(initializer: object) -> None:
    if initializer is not None and not callable(initializer):
        raise TypeError(f"initializer must be a callable, got {initializer!r}")


def check_callbacks(callback: object, error_callback: object) -> None:
    for name, value in (("callback", callback), ("error_callback", error_callback)):
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be a callable, got {value!r}")


def as_args(args: Iterable[Any]) -> tuple[Any, ...]:
    try:
        return tuple(args)
    except TypeError:
        raise TypeError(
            f"args must be a tuple of arguments, not {type(args).__name__}; "
            f"for a single argument write ({args!r},)"
        ) from None


def check_maxtasksperchild(value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"maxtasksperchild must be a positive int or None, got {value!r}")
