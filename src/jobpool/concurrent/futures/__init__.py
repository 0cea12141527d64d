"""``concurrent.futures`` on jobpool: change the import, keep the code.

.. code-block:: python

    from jobpool.concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=4, max_tasks_per_child=100) as executor:
        futures = [executor.submit(work, item) for item in items]
        for future in as_completed(futures):
            print(future.result())

``ProcessPoolExecutor`` and ``ThreadPoolExecutor`` take the stdlib's constructor arguments and
behave as the stdlib's do (``map`` submits every item at once); underneath each is a
:class:`jobpool.Pool`, so lambdas and closures run on processes, a worker that crashes fails
only its own job (:class:`~jobpool.WorkerCrashedError`) instead of breaking the whole
executor, and an argument that cannot be pickled fails at ``submit``, naming the part. Every
other name (``Future``, ``wait``, ``as_completed``, ``FIRST_COMPLETED``, ``BrokenExecutor``...)
is the stdlib's own, unchanged. "Coming from concurrent.futures" in the docs lists the
differences.
"""

from __future__ import annotations

import concurrent.futures as _stdlib
from typing import Any

from ..._executors import ProcessPoolExecutor, ThreadPoolExecutor

__all__ = [  # the stdlib's
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "BrokenExecutor",
    "CancelledError",
    "Executor",
    "Future",
    "InvalidStateError",
    "ProcessPoolExecutor",
    "ThreadPoolExecutor",
    "TimeoutError",
    "as_completed",
    "wait",
]

for _public in (ProcessPoolExecutor, ThreadPoolExecutor):
    _public.__module__ = __name__  # reprs and docs say jobpool.concurrent.futures
del _public

from . import process as process  # noqa: E402  (the stdlib's submodule names, jobpool's)
from . import thread as thread  # noqa: E402


def __getattr__(name: str) -> Any:
    """Every other public name is the stdlib ``concurrent.futures``'s."""
    if not name.startswith("_"):
        try:
            return getattr(_stdlib, name)
        except AttributeError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
