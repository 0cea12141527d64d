"""per_worker on the Dask backend: one instance per Dask worker and pool, closed with the pool.

A Dask worker runs the tasks of every client connected to its cluster, in a pool of threads, and
outlives any one jobpool pool. So the instances a pool's jobs build on a Dask worker belong to
that (worker, pool) pair, shared by the worker's task threads, and are closed by a worker plugin
when the pool closes (the plugin is removed) or when the worker closes, whichever comes first.

The plugin costs a round trip to the scheduler, so a pool installs it only once a handle has
travelled in this process (``_per_worker.travelled``), before its first job that may use one;
pools that never see a handle never pay. Each task of such a pool names the pool's key, and
runs with that pair's instances as its thread's (``_instances.used_by_this_thread``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from .._per_worker import travelled
from ._in_worker import InstancesPlugin, instances_plugin_name

_log = logging.getLogger("jobpool")


class PoolInstances:
    """The client side for one pool: installs the plugin when needed, removes it at close."""

    def __init__(self, client: Any, key: str) -> None:
        self._client = client
        self._key = key
        self._installed = False
        self._failed = False  # installing it failed once: do not ask the scheduler at every job
        self._lock = threading.Lock()

    def key(self) -> Optional[str]:
        """The key to send with a job: the plugin is installed first if a handle travelled."""
        if self._installed:
            return self._key
        if self._failed or not travelled():
            return None
        with self._lock:
            if not self._installed and not self._failed:
                register = getattr(self._client, "register_plugin", None)
                if register is None:  # distributed < 2023.9
                    register = self._client.register_worker_plugin
                try:
                    register(InstancesPlugin(self._key), name=instances_plugin_name(self._key))
                except Exception:
                    self._failed = True
                    _log.warning(
                        "cannot install jobpool's per_worker plugin on the Dask cluster: each "
                        "task thread builds its own instances, closed only when it ends",
                        exc_info=True,
                    )
                    return None
                self._installed = True
        return self._key if self._installed else None

    def close(self) -> None:
        """Close the instances this pool's jobs built on every worker (remove the plugin)."""
        if not self._installed:
            return
        self._installed = False
        unregister = getattr(self._client, "unregister_worker_plugin", None)
        if unregister is None:
            return
        try:
            unregister(instances_plugin_name(self._key))
        except Exception:  # the scheduler is gone: its workers closed theirs as they went
            _log.debug("removing the per_worker plugin failed", exc_info=True)
