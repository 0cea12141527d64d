"""jobpool: run many jobs in parallel on threads, processes or a Dask cluster, with one Pool.

.. code-block:: python

    from jobpool import Pool

    with Pool(4, backend="process") as pool:
        for result in pool.map(obj.method, huge_generator):
            ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Names are imported on first use: a spawned worker process imports this package on its way to
# jobpool._process._in_worker, and should not pay for the parent-side machinery (Pool, asyncio,
# typing_extensions) it never uses.
_PUBLIC = {
    "DependencyError": "_errors",
    "InitializerError": "_errors",
    "JobKilledError": "_errors",
    "JobTimeoutError": "_errors",
    "JobpoolError": "_errors",
    "MemoryLimitError": "_errors",
    "PerWorkerError": "_errors",
    "QueueFull": "_errors",
    "RemoteError": "_errors",
    "RemoteTraceback": "_errors",
    "ResultLoadError": "_errors",
    "SchedulerLostError": "_errors",
    "SerializationError": "_errors",
    "WorkerCrashedError": "_errors",
    "JobOptions": "_pool",
    "Pool": "_pool",
    "PoolStats": "_stats",
    "per_worker": "_per_worker",
}

if TYPE_CHECKING:
    from ._errors import (
        DependencyError,
        InitializerError,
        JobKilledError,
        JobpoolError,
        JobTimeoutError,
        MemoryLimitError,
        PerWorkerError,
        QueueFull,
        RemoteError,
        RemoteTraceback,
        ResultLoadError,
        SchedulerLostError,
        SerializationError,
        WorkerCrashedError,
    )
    from ._per_worker import per_worker
    from ._pool import JobOptions, Pool
    from ._stats import PoolStats

__version__ = "0.1.0"

__all__ = [
    "DependencyError",
    "InitializerError",
    "JobKilledError",
    "JobOptions",
    "JobTimeoutError",
    "JobpoolError",
    "MemoryLimitError",
    "PerWorkerError",
    "Pool",
    "PoolStats",
    "QueueFull",
    "RemoteError",
    "RemoteTraceback",
    "ResultLoadError",
    "SchedulerLostError",
    "SerializationError",
    "WorkerCrashedError",
    "per_worker",
]


def __getattr__(name: str) -> Any:
    module_name = _PUBLIC.get(name)
    if module_name is None:
        raise AttributeError(f"module 'jobpool' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"jobpool.{module_name}"), name)
    if getattr(value, "__module__", "").startswith("jobpool."):
        value.__module__ = "jobpool"  # reprs and docs say jobpool.Pool, not jobpool._pool.Pool
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
