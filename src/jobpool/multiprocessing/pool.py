"""``multiprocessing.pool`` on jobpool: ``from jobpool.multiprocessing.pool import ThreadPool``.

The stdlib module's pools and result classes are jobpool's (the same as in
:mod:`jobpool.multiprocessing`); ``RemoteTraceback`` is the class jobpool attaches to a job's
exception as its ``__cause__``. Every other name (``MaybeEncodingError``, ``RUN``...) is the
stdlib's own, unchanged.
"""

from __future__ import annotations

import multiprocessing.pool as _stdlib
from typing import Any

from .._errors import RemoteTraceback
from . import (
    ApplyResult,
    AsyncResult,
    IMapIterator,
    IMapUnorderedIterator,
    MapResult,
    Pool,
    ThreadPool,
    TimeoutError,
)

__all__ = [
    "ApplyResult",
    "AsyncResult",
    "IMapIterator",
    "IMapUnorderedIterator",
    "MapResult",
    "Pool",
    "RemoteTraceback",
    "ThreadPool",
    "TimeoutError",
]


def __getattr__(name: str) -> Any:
    """Every other public name is the stdlib ``multiprocessing.pool``'s."""
    if not name.startswith("_"):
        try:
            return getattr(_stdlib, name)
        except AttributeError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
