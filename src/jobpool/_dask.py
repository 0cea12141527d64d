"""The Dask backend: the pool's jobs run as tasks on a Dask cluster (``distributed``).

    caller thread               dispatcher thread                  Dask worker (one of several)
    -------------               -----------------                  ----------------------------
    submit(fn, *args)
      serialize (pickle, then
      cloudpickle) -> Job
      JobQueue.put --- wake ---> for a worker with room (its free
                                 slots, plus a few to wait there
                                 when its jobs are short):
                                   client.submit, pinned there ---> run_on_worker(bytes)
                                                                      claim it, unpickle, run
                                 watch it <- result fetched <------- (tag, result or exception)
      Future resolved <--------- resolve the job's Future once;
                                 the next task waiting on that
                                 worker is running now

The pool keeps its own queue: at most ``workers`` of its jobs run on the cluster at once, the
slots shared out over the cluster's workers (see :mod:`jobpool._dask_slots`), and the rest wait
in the pool's bounded queue, so backpressure, ``submit_nowait`` and the lazy ``map`` behave as on
the other backends. A worker whose jobs are short also holds a few tasks beyond its slots, which
start there the moment a running one ends: no worker waits for a scheduler round trip between two
jobs. Like the process backend's jobs sent ahead, those are marked running when sent.

Jobs travel as bytes made by :mod:`jobpool._serialization` (so a bad argument fails at
``submit`` with the part named, and lambdas, closures and bound methods work); a worker runs them
and sends back bytes too, so Dask itself only ever moves bytes. A job's exception therefore never
becomes a Dask task error: Dask does not retry it, and it comes back with its own type and the
worker-side traceback. What *is* a task error is a worker that died while running it
(``KilledWorker``), reported as :class:`WorkerCrashedError`.

Without ``address=`` or ``client=``, the backend starts a ``LocalCluster`` of worker processes on
the loopback interface and closes it with the pool (:mod:`jobpool._dask_cluster`). With
``address=`` it connects a client of its own (closed with the pool, the cluster left running);
with ``client=`` it uses that client and leaves it open.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any, Callable, Optional

from distributed.diagnostics.plugin import WorkerPlugin

from . import _main_globals
from ._backend import BackendSetup, PreparedFunction
from ._dask_inputs import KeptResults, loader
from ._errors import InitializerError, SerializationError
from ._errors import initializer_error as _initializer_error
from ._execution import INIT_FAILED, OK, RAISED, RUN_CALL, RUN_CHUNK, KeptFunctions, run_job
from ._job import Job
from ._per_worker_dask import PoolInstances, pool_instances
from ._remote import pack_exception, unpack_exception
from ._serialization import dumps, serialize_job

_log = logging.getLogger("jobpool")

# What a task sends back: a tag (OK, RAISED, INIT_FAILED, as every worker of jobpool's own,
# see _execution; or WITHDRAWN), bytes, and the seconds the job ran.
WITHDRAWN = 16
__all__ = ["INIT_FAILED", "OK", "RAISED", "RUN_CALL", "RUN_CHUNK", "WITHDRAWN"]

KILL_UNSUPPORTED = (
    "Pool.kill() cannot stop a running job on the Dask backend: Dask has no way to interrupt a "
    "task once a worker runs it. Jobs that have not started can be killed (waiting in the "
    "pool's queue, they are cancelled; waiting on a Dask worker, they fail with JobKilledError "
    "and never run). To bound a job's run time use job_timeout= or pool.options(timeout=...) "
    "(its future fails on time, the task runs on), or use backend='process', which kills the "
    "worker."
)


# --- worker side ----------------------------------------------------------------------------------
# Everything below runs inside Dask worker processes; it must stay importable there.

_init_lock = threading.Lock()
# Pool token -> None once its initializer ran here, or the packed exception it raised.
_init_outcomes: dict[str, Optional[bytes]] = {}
_functions = KeptFunctions()  # large functions, by their bytes (a map sends the same often)
FUNCTION_CACHE_MIN_BYTES = 1024  # smaller than the process backend's: each task pays Dask more

# Which of the pool's tasks this worker process has started, and which it must not start: the
# pool takes back a task that waits here (Pool.kill(), or a worker whose running job turned out
# long), and only this process can tell whether it started meanwhile.
_claims_lock = threading.Lock()
_running_keys: set[str] = set()
_withdrawn_keys: OrderedDict[str, None] = OrderedDict()
MAX_WITHDRAWN_KEYS = 10_000  # keys of tasks taken back before they reached this worker
# Dask task states in which a task has not started (and may still be taken back).
NOT_STARTED_STATES = frozenset({"released", "waiting", "ready", "constrained"})


def plugin_name(token: str) -> str:
    return f"jobpool-initializer-{token}"


class InitializerPlugin(WorkerPlugin):
    """Runs the pool's initializer once in every Dask worker, including ones that join later.

    It never raises into Dask (Dask only logs a plugin failure on a worker that joins later):
    it records the outcome, and every job of the pool checks it before it runs.
    """

    def __init__(self, token: str, setup: bytes) -> None:
        self.token = token
        self.setup_bytes = setup
        self.name = plugin_name(token)

    def setup(self, worker: Any = None) -> None:
        self.run_once()

    def run_once(self) -> Optional[bytes]:
        with _init_lock:
            if self.token not in _init_outcomes:
                try:
                    initializer, initargs = _main_globals.loads(self.setup_bytes)
                    initializer(*initargs)
                except BaseException as exc:
                    _init_outcomes[self.token] = pack_exception(exc)
                else:
                    _init_outcomes[self.token] = None
            return _init_outcomes[self.token]


def init_outcome(token: str) -> Optional[bytes]:
    """The packed initializer failure in this worker for the pool ``token``, or None if it ran."""
    if token in _init_outcomes:
        return _init_outcomes[token]
    from distributed import get_worker

    try:
        plugin = get_worker().plugins.get(plugin_name(token))
    except ValueError:  # not inside a Dask worker
        plugin = None
    if not isinstance(plugin, InitializerPlugin):
        error = InitializerError(
            "the pool's initializer is not installed on this Dask worker (its plugin is missing)"
        )
        return pack_exception(error)
    return plugin.run_once()


def _load_function(fn_bytes: bytes) -> Callable[..., Any]:
    """Unpickle a job's function, reusing recent large ones (see _execution.KeptFunctions)."""
    if len(fn_bytes) < FUNCTION_CACHE_MIN_BYTES:
        fn: Callable[..., Any] = _main_globals.loads(fn_bytes)
        return fn
    kept = _functions.get(fn_bytes)
    if kept is not None:
        return kept
    return _functions.keep(fn_bytes, lambda: _main_globals.loads(fn_bytes))


def run_on_worker(
    token: Optional[str],
    kind: int,
    fn_bytes: bytes,
    body: bytes,
    key: str,
    instances: Optional[str] = None,
    inputs: Optional[tuple[Any, ...]] = None,
) -> tuple[int, bytes, float]:
    """The Dask task of every job: unpickle, run, and send the outcome back as bytes.

    ``instances`` names the pool whose per_worker instances the job uses (see _per_worker_dask).
    ``inputs``: the values of the futures among the job's arguments, each the reply of this
    pool's task that made it (Dask hands it over) or one pickled by the pool (_dask_inputs).
    """
    with _claims_lock:
        if key in _withdrawn_keys:
            del _withdrawn_keys[key]
            return WITHDRAWN, b"", 0.0
        _running_keys.add(key)
    start = time.perf_counter()
    try:
        if token is not None:
            failure = init_outcome(token)
            if failure is not None:
                return INIT_FAILED, failure, 0.0
        try:
            fn = _load_function(fn_bytes)
        except BaseException as exc:
            return RAISED, pack_exception(exc), time.perf_counter() - start
        with pool_instances(instances):
            if inputs is None:
                tag, data = run_job(kind, fn, body)
            else:
                try:
                    load = loader(inputs, OK)
                except BaseException as exc:
                    return RAISED, pack_exception(exc), time.perf_counter() - start
                tag, data = run_job(kind, fn, body, load)
        return tag, data, time.perf_counter() - start
    finally:
        with _claims_lock:
            _running_keys.discard(key)


def withdraw_tasks(keys: list[str], dask_worker: Any = None) -> dict[str, bool]:
    """Take back the pool's tasks that have not started here: key -> True if taken back.

    Runs in the worker's event loop, where Dask changes its task states: a task that is
    executing (or done) answers False, any other is marked so that it never runs, including one
    that has not reached this worker yet.
    """
    states = getattr(getattr(dask_worker, "state", None), "tasks", {})
    answers: dict[str, bool] = {}
    with _claims_lock:
        for key in keys:
            task = states.get(key)
            started = key in _running_keys or (
                task is not None and task.state not in NOT_STARTED_STATES
            )
            answers[key] = not started
            if not started:
                _withdrawn_keys[key] = None
        while len(_withdrawn_keys) > MAX_WITHDRAWN_KEYS:
            _withdrawn_keys.popitem(last=False)
    return answers


async def set_slots(resource: str, amounts: dict[str, int], dask_worker: Any = None) -> int:
    """Set the pool's resource on this worker to its quota (see _dask_slots); return it."""
    amount = amounts.get(dask_worker.contact_address, amounts.get(dask_worker.address))
    if amount is None:
        return -1
    await dask_worker.set_resources(**{resource: amount})
    return amount


# --- client side ----------------------------------------------------------------------------------


def _distributed() -> Any:
    """The ``distributed`` module, untyped: its constructors have no annotations."""
    import distributed

    return distributed


def _connect(address: str) -> Any:
    try:
        return _distributed().Client(address, set_as_default=False)
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


def initializer_error(
    failure: bytes, worker: Optional[str] = None, at_start: bool = False
) -> InitializerError:
    """The pool's initializer failed on a Dask worker (the words are every backend's)."""
    where = f"on Dask worker {worker}" if worker else "on a Dask worker"
    outcome = "no pool was created" if at_start else "the pool is broken and accepts no more jobs"
    return _initializer_error(unpack_exception(failure), where, outcome=outcome)


class DaskBackend:
    name = "dask"
    kill_limitation = KILL_UNSUPPORTED  # for a job a Dask worker runs already
    serializes = True  # prepare() pickles the job in the caller's thread

    def __init__(
        self, setup: BackendSetup, *, address: Optional[str] = None, client: Any = None
    ) -> None:
        from ._dask_cluster import start_local_cluster
        from ._dask_dispatcher import DaskDispatcher

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
        futures as arguments (see _dask_inputs)."""
        return self._dispatcher.tasks.kept

    def offer(self, job: Job) -> bool:
        """Jobs always go through the queue: the dispatcher decides where each one runs."""
        return False

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
                raise initializer_error(failure, worker, at_start=True)

    def _remove_initializer(self) -> None:
        if self._setup is None:
            return
        unregister = getattr(self._client, "unregister_worker_plugin", None)
        if unregister is None:
            return
        try:
            unregister(plugin_name(self._token))
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
