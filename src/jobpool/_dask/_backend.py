"""DaskBackend: the parent-side face of the Dask backend (see the package docstring).

It checks the cluster arguments, connects or starts a cluster (``_cluster``), installs the
pool's initializer on every worker and checks that it ran, serializes each job in the caller's
thread, and hands the rest to the dispatcher thread (``_dispatcher``). What runs inside the Dask
workers is ``_in_worker``'s.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import Future
from typing import Any, Callable, Optional

from .._contract import BackendSetup, PreparedFunction
from .._errors import SerializationError
from .._job import Job, serialize_job
from .._serialization import dumps
from ._client import new_client
from ._in_worker import InitializerPlugin, init_outcome, initializer_plugin_name
from ._inputs import KeptResults
from ._per_worker import PoolInstances
from ._replies import initializer_error_on_dask

_log = logging.getLogger("jobpool")

KILL_UNSUPPORTED = (
    "Pool.kill() cannot stop a running job on the Dask backend: Dask has no way to interrupt a "
    "task once a worker runs it. Jobs that have not started can be killed (waiting in the "
    "pool's queue, they are cancelled; waiting on a Dask worker, they fail with JobKilledError "
    "and never run). To bound a job's run time use job_timeout= or pool.options(timeout=...) "
    "(its future fails on time, the task runs on), or use backend='process', which kills the "
    "worker."
)


# --- client side ----------------------------------------------------------------------------------


def _distributed() -> Any:
    """The ``distributed`` module, untyped: its constructors have no annotations."""
    import distributed

    return distributed


def _connect(address: str) -> Any:
    try:
        return new_client(address)
    except Exception as exc:
        raise OSError(f"cannot connect to the Dask scheduler at {address!r}: {exc}") from exc


def _check_cluster_arguments(address: Optional[str], client: Any) -> None:
    """Refuse ``address=`` and ``client=`` together, or either of the wrong kind."""
    from distributed import Client

    if address is not None and client is not None:
        raise TypeError("pass address= or client=, not both: client= is already connected")
    if address is not None and not isinstance(address, str):
        raise TypeError(
            f"address must be a scheduler address such as 'tcp://10.0.0.5:8786', "
            f"not {type(address).__name__}"
        )
    if client is not None:
        if not isinstance(client, Client):
            raise TypeError(f"client must be a distributed.Client, not {type(client).__name__}")
        if client.status not in ("running", "newly-created"):
            raise ValueError(f"client= is not connected (its status is {client.status!r})")


class DaskBackend:
    name = "dask"
    kill_limitation = KILL_UNSUPPORTED  # for a job a Dask worker runs already
    serializes = True  # prepare() pickles the job in the caller's thread
    read_reply = None  # a waiting thread waits on the future

    def __init__(
        self, setup: BackendSetup, *, address: Optional[str] = None, client: Any = None
    ) -> None:
        from ._cluster import start_local_cluster
        from ._dispatcher import DaskDispatcher

        _check_cluster_arguments(address, client)
        workers, initializer, initargs = setup.workers, setup.initializer, setup.initargs
        self._token = uuid.uuid4().hex
        self._setup: Optional[bytes] = None
        if initializer is not None:
            try:
                self._setup = dumps((initializer, tuple(initargs)), "initializer")
            except SerializationError as exc:
                raise SerializationError(
                    f"the initializer and initargs must be serializable: {exc}", exc.path
                ) from exc
        self._cluster: Any = None
        self._owns_client = client is None
        if client is not None:
            self._client: Any = client
        elif address is not None:
            self._client = _connect(address)
        else:
            self._cluster, self._client = start_local_cluster(workers)
        self._per_worker = PoolInstances(self._client, self._token)
        try:
            if self._setup is not None:
                self._install_initializer()
            self._dispatcher = DaskDispatcher(
                self._client,
                setup.queue,
                setup.outcomes,
                workers,
                self._token,
                with_initializer=self._setup is not None,
                on_broken=setup.on_broken,
                on_exit=self._close,
                per_worker=self._per_worker,
            )
        except BaseException:
            self._close()
            raise
        self._dispatcher.start()

    # --- the backend contract -------------------------------------------------------------------

    def prepare(self, job: Job) -> None:
        """Serialize the job in the caller's thread, so a bad argument fails at submit."""
        serialize_job(job)

    def prepare_function(self, fn: Callable[..., Any]) -> PreparedFunction:
        """Serialize ``fn`` once for a whole ``map`` call."""
        return dumps(fn, "fn"), None, ()

    @property
    def cluster_inputs(self) -> KeptResults:
        """The results of this pool's jobs kept on the cluster for its jobs that take their
        futures as arguments (see _inputs)."""
        return self._dispatcher.tasks.kept

    def offer(self, job: Job) -> bool:
        """Jobs always go through the queue: the dispatcher decides where each one runs."""
        return False

    def refused(self, job: Job) -> None:
        """Its bytes hold nothing to let go of."""

    def notify(self) -> None:
        self._dispatcher.notify()

    def kill(self, future: Future[Any]) -> bool:
        """Fail a job that has not started on the cluster; False for one that runs already
        (it cannot be stopped: see ``kill_limitation``) or has finished."""
        if future.done():
            return False
        return self._dispatcher.kill(future)

    def worker_count(self) -> int:
        """Jobs that can run at once: ``workers``, or fewer if the cluster has fewer threads."""
        return self._dispatcher.slot_count()

    def shutdown(self, wait: bool) -> None:
        self._dispatcher.shutdown(wait)

    def terminate(self) -> None:
        self._dispatcher.terminate()

    # --- setting up and closing -----------------------------------------------------------------

    def _install_initializer(self) -> None:
        """Register the initializer plugin and check that it ran on every current worker."""
        assert self._setup is not None
        plugin = InitializerPlugin(self._token, self._setup)
        register = getattr(self._client, "register_plugin", None)
        if register is None:  # distributed < 2023.9
            register = self._client.register_worker_plugin
        register(plugin, name=plugin.name)
        outcomes: dict[str, Optional[bytes]] = self._client.run(init_outcome, self._token)
        for worker, failure in sorted(outcomes.items()):
            if failure is not None:  # __init__ removes the plugin and closes what it opened
                raise initializer_error_on_dask(failure, worker, at_start=True)

    def _remove_initializer(self) -> None:
        if self._setup is None:
            return
        unregister = getattr(self._client, "unregister_worker_plugin", None)
        if unregister is None:
            return
        try:
            unregister(initializer_plugin_name(self._token))
        except Exception:  # the scheduler is gone, or the plugin never got there
            pass

    def _close(self) -> None:
        # A client that lost its scheduler would wait for it to come back before each removal;
        # the plugins were registered with the scheduler that is gone.
        if self._client.status == "running":
            self._per_worker.close()  # closes the per_worker instances its jobs built
            self._remove_initializer()
        if self._owns_client:
            try:
                self._client.close()
            except Exception:
                _log.debug("closing the Dask client failed", exc_info=True)
        if self._cluster is not None:
            try:
                self._cluster.close()
            except Exception:
                _log.warning("closing the pool's Dask LocalCluster failed", exc_info=True)
