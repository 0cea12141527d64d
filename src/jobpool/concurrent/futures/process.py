"""``concurrent.futures.process``: jobpool's ``ProcessPoolExecutor``, the stdlib's other names.

``BrokenProcessPool`` and the rest are the stdlib module's own, unchanged.
"""

from __future__ import annotations

import concurrent.futures.process as _stdlib
from typing import Any

from ..._executors import ProcessPoolExecutor

__all__ = ["BrokenProcessPool", "ProcessPoolExecutor"]  # noqa: F822 - see __getattr__


def __getattr__(name: str) -> Any:
    """Every other public name is the stdlib ``concurrent.futures.process``'s."""
    if not name.startswith("_"):
        try:
            return getattr(_stdlib, name)
        except AttributeError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
