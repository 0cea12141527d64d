"""The Dask backend's own ``LocalCluster``, whose worker processes never import your ``__main__``.

Why: ``distributed``'s nannies start their worker processes with multiprocessing's spawn, and a
spawned process first re-imports the parent's ``__main__`` (``multiprocessing.spawn``'s
``init_main_from_path`` / ``init_main_from_name``). For a script without the
``if __name__ == "__main__":`` guard that re-runs its top level in every worker (which creates
another pool there); for a script read from standard input the worker looks for a file called
``<stdin>`` and dies ("Nanny failed to start"). jobpool ships functions, classes and values from
``__main__`` by value (cloudpickle), so its workers never need the script.

How, without changing anything for the rest of the process (loky does the same for its own
processes with the ``init_main_module`` switch of its ``backend/spawn.py``):

- The pool's cluster uses :class:`OwnNanny`, a ``Nanny`` that marks the coroutine starting its
  worker process (at start, and at every restart after a crash) with a context variable.
- ``distributed``'s process wrapper asks ``get_mp_context()`` for the context to start that
  process with; jobpool wraps that function so that, under the mark only, it answers with
  :data:`SPAWN_WITHOUT_MAIN`: a spawn context whose processes leave the main-module entries out
  of the data a spawned child prepares itself from. Every other caller gets distributed's answer.
- Leaving them out is done by the same wrapper of ``multiprocessing.spawn.get_preparation_data``
  that starts the process backend's workers without ``__main__`` (``_process/_start``): it
  changes the data only while one of those processes is being started, in that thread.

Other multiprocessing users in the process (your own pools, other Dask clusters) are not
affected. A worker process of the pool's cluster uses spawn even where Dask's configuration asks
for forkserver (whose server process imports ``__main__``); ``fork`` is kept, since a forked
process does not import anything. If the hooks cannot be installed (a ``distributed`` without
``get_mp_context`` in its process module), the cluster starts as Dask starts it, and a
``__main__`` that a worker could not import at all (a script read from standard input) is
refused at once with what to do instead.
"""

from __future__ import annotations

import contextvars
import multiprocessing
import multiprocessing.context
import multiprocessing.spawn
import os
import sys
import threading
from typing import Any, Callable, Optional

import dask
import distributed
import distributed.process

from ._process._start import skip_main_in_workers, starting_without_main

_process_module: Any = distributed.process  # untyped: its functions have no annotations

# The cluster a pool starts for itself fails a job at the first worker death instead of
# retrying it on other workers (Dask's default is 3 retries, each killing a worker).
OWN_CLUSTER_ALLOWED_FAILURES = 0

_starting_own_worker: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "jobpool_starting_own_dask_worker", default=False
)
_install_lock = threading.Lock()
_installed: Optional[bool] = None  # None: not tried yet; False: distributed offers no hook


class _SpawnProcessWithoutMain(multiprocessing.context.SpawnProcess):
    """A spawned process that does not import the parent's ``__main__`` first."""

    def start(self) -> None:
        with starting_without_main():
            super().start()


class SpawnContextWithoutMain(multiprocessing.context.SpawnContext):
    Process = _SpawnProcessWithoutMain


SPAWN_WITHOUT_MAIN = SpawnContextWithoutMain()


class OwnNanny(distributed.Nanny):
    """A Nanny whose worker processes (first and restarted ones) skip ``__main__``."""

    async def instantiate(self) -> Any:
        mark = _starting_own_worker.set(True)
        try:
            return await super().instantiate()
        finally:
            _starting_own_worker.reset(mark)


def _wrap_get_mp_context(original: Callable[[], Any]) -> Callable[[], Any]:
    def get_mp_context() -> Any:
        context = original()
        if _starting_own_worker.get() and context.get_start_method() != "fork":
            return SPAWN_WITHOUT_MAIN
        return context

    get_mp_context.__wrapped__ = original  # type: ignore[attr-defined]
    return get_mp_context


def install_hooks() -> bool:
    """Install both wrappers once; False if this ``distributed`` has no place for them."""
    global _installed
    with _install_lock:
        if _installed is None:
            original: Any = getattr(_process_module, "get_mp_context", None)
            _installed = callable(original)
            if _installed:
                _process_module.get_mp_context = _wrap_get_mp_context(original)
                skip_main_in_workers()
        return _installed


def refuse_unimportable_main() -> None:
    """Say at once why a worker could not start, instead of Dask's "Nanny failed to start"."""
    main_path = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_path is None or getattr(sys.modules["__main__"], "__spec__", None) is not None:
        return
    original_dir = getattr(multiprocessing.process, "ORIGINAL_DIR", None) or ""
    if not os.path.exists(os.path.join(original_dir, main_path)):
        raise RuntimeError(
            f"backend='dask' cannot start its own LocalCluster from this program: Dask starts "
            f"its worker processes with spawn, and each would first import your main module "
            f"from {main_path!r}, which is not a file (a script read from standard input?). "
            "Save the script to a file, or start a cluster yourself and pass address= or client="
        )


def _distributed() -> Any:
    """The ``distributed`` module, untyped: its constructors have no annotations."""
    return distributed


def start_local_cluster(workers: int) -> tuple[Any, Any]:
    """A LocalCluster of worker processes on loopback with room for ``workers`` jobs at once."""
    if install_hooks():
        worker_class: Any = OwnNanny
    else:  # pragma: no cover - depends on the installed distributed
        refuse_unimportable_main()
        worker_class = distributed.Nanny
    processes = max(1, min(workers, os.cpu_count() or 1))
    threads = -(-workers // processes)
    with dask.config.set({"distributed.scheduler.allowed-failures": OWN_CLUSTER_ALLOWED_FAILURES}):
        cluster = _distributed().LocalCluster(
            n_workers=processes,
            threads_per_worker=threads,
            processes=True,
            worker_class=worker_class,
            host="127.0.0.1",
            # No dashboard; the scheduler's small HTTP server (health, metrics) always starts:
            # on a free loopback port, not on 8787 (which another cluster may hold).
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
        )
    try:
        client = _distributed().Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    return cluster, client
