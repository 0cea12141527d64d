"""``multiprocessing.Pool`` and ``ThreadPool`` on jobpool: change the import, keep the code.

.. code-block:: python

    from jobpool.multiprocessing import Pool, ThreadPool
    # or, as the stdlib spells them:
    from jobpool.multiprocessing.pool import Pool, ThreadPool
    from jobpool.multiprocessing.dummy import Pool as ThreadPool

    with Pool(processes=4) as pool:
        print(pool.map(square, range(10)))

The constructors, methods, return types and errors are the stdlib's; underneath is one
:class:`jobpool.Pool`, which makes these pools better where the original hurts: lambdas, closures
and bound methods run on processes; a worker that crashes fails only its own result (with
:class:`~jobpool.WorkerCrashedError`) and the pool goes on; ``imap`` reads its input lazily; an
argument that cannot be pickled fails at the call, naming the part; ``get()`` re-raises a job's
exception with the worker's traceback; no worker outlives the pool, a Ctrl-C or a killed parent.
"Coming from multiprocessing.Pool" in the docs lists every spelling.

Every other name of the stdlib's ``multiprocessing`` (``cpu_count``, ``Queue``, ``Manager``...)
is importable from here too, unchanged, so ``import jobpool.multiprocessing as multiprocessing``
keeps a whole script working. The submodules ``pool`` and ``dummy`` are the stdlib's module
layout: each has jobpool's pools and the stdlib's other names.
"""

from __future__ import annotations

import multiprocessing as _stdlib
from collections.abc import Iterable
from multiprocessing.context import BaseContext
from typing import Any, Callable, Optional

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
    "ThreadPool",
    "TimeoutError",
    "get_context",
]

TimeoutError = _stdlib.TimeoutError  # what get(timeout) and next(timeout) raise
ApplyResult = AsyncResult  # the stdlib's other name for it
IMapUnorderedIterator = IMapIterator

for _public in (Pool, ThreadPool, AsyncResult, MapResult, IMapIterator):
    _public.__module__ = __name__  # reprs and docs say jobpool.multiprocessing.Pool
del _public

# The stdlib's submodule names, jobpool's here: imported now, so that the attribute
# ``jobpool.multiprocessing.pool`` never falls through to the stdlib's module below.
from . import dummy as dummy  # noqa: E402
from . import pool as pool  # noqa: E402

_CONTEXT_CLASSES: dict[type, type] = {}


def get_context(method: Optional[str] = None) -> BaseContext:
    """``multiprocessing.get_context(method)``, whose ``Pool`` is jobpool's.

    The context is the stdlib's own (``Process``, ``Queue``, ``Lock``... are its), of a subclass
    whose ``Pool(processes, initializer, initargs, maxtasksperchild)`` makes a
    :class:`jobpool.multiprocessing.Pool` with this context: code that writes
    ``multiprocessing.get_context("spawn").Pool(4)`` gets jobpool's pool too.
    """
    context = _stdlib.get_context(method)
    cls = type(context)
    ours = _CONTEXT_CLASSES.get(cls)
    if ours is None:
        ours = type(cls.__name__, (cls,), {"Pool": _context_pool, "__module__": __name__})
        _CONTEXT_CLASSES[cls] = ours
    made: BaseContext = ours()
    return made


def _context_pool(
    self: BaseContext,
    processes: Optional[int] = None,
    initializer: Optional[Callable[..., object]] = None,
    initargs: Iterable[Any] = (),
    maxtasksperchild: Optional[int] = None,
) -> Pool:
    """Returns a process pool object (jobpool's, with this context)."""
    return Pool(processes, initializer, initargs, maxtasksperchild, context=self)


def __getattr__(name: str) -> Any:
    """Every other public name is the stdlib ``multiprocessing``'s (see the module docstring)."""
    if not name.startswith("_"):
        try:
            return getattr(_stdlib, name)
        except AttributeError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
