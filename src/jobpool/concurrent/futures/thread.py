"""``concurrent.futures.thread``: jobpool's ``ThreadPoolExecutor``, the stdlib's other names.

``BrokenThreadPool`` and the rest are the stdlib module's own, unchanged.
"""

from __future__ import annotations

import concurrent.futures.thread as _stdlib
from typing import Any

from ..._executors import ThreadPoolExecutor

__all__ = ["BrokenThreadPool", "ThreadPoolExecutor"]  # noqa: F822 - see __getattr__


def __getattr__(name: str) -> Any:
    """Every other public name is the stdlib ``concurrent.futures.thread``'s."""
    if not name.startswith("_"):
        try:
            return getattr(_stdlib, name)
        except AttributeError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
