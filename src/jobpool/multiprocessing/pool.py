"""``multiprocessing.pool`` on jobpool: ``from jobpool.multiprocessing.pool import ThreadPool``.

The stdlib module's pools and result classes are jobpool's (the same as in
:mod:`jobpool.multiprocessing`); ``RemoteTraceback`` is the class jobpool attaches to a job's
exception as its ``__cause__``. Every other name (``MaybeEncodingError``, ``RUN``...) is the
stdlib's own, unchanged.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool as _stdlib
from typing import Any

from .._errors import RemoteTraceback
from .._mp_pool._imap import IMapIterator
from .._mp_pool._pool import Pool, ThreadPool
from .._mp_pool._results import AsyncResult, MapResult

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

# The same objects as jobpool.multiprocessing's (taken from where they live, not from the
# package, which imports this module), under the stdlib's names.
TimeoutError = multiprocessing.TimeoutError
ApplyResult = AsyncResult
IMapUnorderedIterator = IMapIterator


def __getattr__(name: str) -> Any:
    """Every other public name is the stdlib ``multiprocessing.pool``'s."""
    if not name.startswith("_"):
        try:
            return getattr(_stdlib, name)
        except AttributeError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
