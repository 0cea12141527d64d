"""jobpool: run many jobs in parallel on threads, processes or a Dask cluster, with one Pool.

.. code-block:: python

    from jobpool import Pool

    with Pool(4, backend="process") as pool:
        for result in pool.map(obj.method, huge_generator):
            ...
"""

from __future__ import annotations

from ._errors import (
    InitializerError,
    JobKilledError,
    JobpoolError,
    JobTimeoutError,
    QueueFull,
    RemoteError,
    RemoteTraceback,
    SerializationError,
    WorkerCrashedError,
)
from ._pool import JobOptions, Pool
from ._stats import PoolStats

__version__ = "0.1.0"

__all__ = [
    "InitializerError",
    "JobKilledError",
    "JobOptions",
    "JobTimeoutError",
    "JobpoolError",
    "Pool",
    "PoolStats",
    "QueueFull",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "WorkerCrashedError",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("jobpool."):
        _obj.__module__ = "jobpool"
del _name, _obj
