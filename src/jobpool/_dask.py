"""The Dask backend: the pool's jobs run as tasks on a Dask cluster (``distributed``).

    caller thread               dispatcher thread                    Dask worker
    -------------               -----------------                    -----------
    submit(fn, *args)
      serialize (pickle, then
      cloudpickle) -> Job
      JobQueue.put --- wake ---> while < ``workers`` tasks in flight:
                                   take a job, client.submit -------> run_on_worker(bytes)
                                                                       unpickle, run
                                 done callbacks <------------------- (tag, result or exception)
      Future resolved <--------- gather the finished ones in one go,
                                 resolve each job's Future once

The pool keeps its own queue: at most ``workers`` jobs are tasks on the cluster at once and the
rest wait in the pool's bounded queue, so backpressure, ``submit_nowait`` and the lazy ``map``
behave as on the other backends. Jobs travel as bytes made by :mod:`jobpool._serialization` (so a
bad argument fails at ``submit`` with the part named, and lambdas, closures and bound methods
work); a worker runs them and sends back bytes too, so Dask itself only ever moves bytes. A job's
exception therefore never becomes a Dask task error: Dask does not retry it, and it comes back
with its own type and the worker-side traceback. What *is* a task error is a worker that died
while running it (``KilledWorker``), reported as :class:`WorkerCrashedError`.

Without ``address=`` or ``client=``, the backend starts a ``LocalCluster`` of worker processes on
the loopback interface and closes it with the pool. With ``address=`` it connects a client of its
own (closed with the pool, the cluster left running); with ``client=`` it uses that client and
leaves it open.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import Any, Callable, Optional

from distributed.diagnostics.plugin import WorkerPlugin

from ._backend import BackendSetup, PreparedFunction
from ._errors import (
    InitializerError,
    JobKilledError,
    JobpoolError,
    JobTimeoutError,
    SerializationError,
    WorkerCrashedError,
)
from ._job import Call, Job, run_chunk
from ._lifecycle import weak_callback
from ._per_worker_dask import PoolInstances, pool_instances
from ._remote import pack_exception, unpack_exception
from ._serialization import dumps, serialize_job

_log = logging.getLogger("jobpool")

# What a task sends back: a tag and bytes.
OK, RAISED, INIT_FAILED = 0, 1, 2
# What a task runs: one call, or a chunk of a map.
RUN_CALL, RUN_CHUNK = 0, 1

# The cluster a pool starts for itself fails a job at the first worker death instead of
# retrying it on other workers (Dask's default is 3 retries, each killing a worker).
OWN_CLUSTER_ALLOWED_FAILURES = 0
# How often worker_count() may ask the scheduler how many threads the cluster has.
NTHREADS_REFRESH_SECONDS = 2.0

KILL_UNSUPPORTED = (
    "Pool.kill() cannot stop a running job on the Dask backend: Dask has no way to interrupt a "
    "task once a worker runs it. Jobs still waiting in the pool's queue can be killed (they are "
    "cancelled). To bound a job's run time use job_timeout= or pool.options(timeout=...) (its "
    "future fails on time, the task runs on), or use backend='process', which kills the worker."
)


# --- worker side ----------------------------------------------------------------------------------
# Everything below runs inside Dask worker processes; it must stay importable there.

_init_lock = threading.Lock()
# Pool token -> None once its initializer ran here, or the packed exception it raised.
_init_outcomes: dict[str, Optional[bytes]] = {}
_functions: OrderedDict[bytes, Callable[..., Any]] = OrderedDict()
_functions_lock = threading.Lock()
FUNCTION_CACHE_SIZE = 16
FUNCTION_CACHE_MIN_BYTES = 1024


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
                    initializer, initargs = pickle.loads(self.setup_bytes)
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
    """Unpickle a job's function, reusing recent large ones (a map sends the same bytes often)."""
    fn: Optional[Callable[..., Any]]
    if len(fn_bytes) < FUNCTION_CACHE_MIN_BYTES:
        fn = pickle.loads(fn_bytes)
        assert fn is not None
        return fn
    with _functions_lock:
        fn = _functions.get(fn_bytes)
        if fn is not None:
            _functions.move_to_end(fn_bytes)
            return fn
    fn = pickle.loads(fn_bytes)
    assert fn is not None
    with _functions_lock:
        _functions[fn_bytes] = fn
        if len(_functions) > FUNCTION_CACHE_SIZE:
            _functions.popitem(last=False)
    return fn


def run_on_worker(
    token: Optional[str], kind: int, fn_bytes: bytes, body: bytes, instances: Optional[str] = None
) -> tuple[int, bytes]:
    """The Dask task of every job: unpickle, run, and send the outcome back as bytes.

    ``instances`` names the pool whose per_worker instances the job uses (see _per_worker_dask).
    """
    if token is not None:
        failure = init_outcome(token)
        if failure is not None:
            return INIT_FAILED, failure
    try:
        fn = _load_function(fn_bytes)
        args = pickle.loads(body)
        with pool_instances(instances):
            value = fn(*args[0], **args[1]) if kind == RUN_CALL else run_chunk(fn, *args)
        return OK, dumps(value, "the job's result")
    except BaseException as exc:
        return RAISED, pack_exception(exc)


# --- client side ----------------------------------------------------------------------------------


def _distributed() -> Any:
    """The ``distributed`` module, untyped: its constructors have no annotations."""
    import distributed

    return distributed


def _start_local_cluster(workers: int) -> tuple[Any, Any]:
    """A LocalCluster of worker processes on loopback with room for ``workers`` jobs at once."""
    import dask

    distributed = _distributed()

    processes = max(1, min(workers, os.cpu_count() or 1))
    threads = -(-workers // processes)
    with dask.config.set({"distributed.scheduler.allowed-failures": OWN_CLUSTER_ALLOWED_FAILURES}):
        cluster = distributed.LocalCluster(
            n_workers=processes,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            # No dashboard; the scheduler's small HTTP server (health, metrics) always starts:
            # on a free loopback port, not on 8787 (which another cluster may hold).
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
        )
    try:
        client = distributed.Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    return cluster, client


def _connect(address: str) -> Any:
    try:
        return _distributed().Client(address, set_as_default=False)
    except Exception as exc:
        raise OSError(f"cannot connect to the Dask scheduler at {address!r}: {exc}") from exc


def _crash_error(dask_error: BaseException) -> WorkerCrashedError:
    """Turn Dask's ``KilledWorker`` into the error the other backends raise for a dead worker."""
    last = getattr(dask_error, "last_worker", None)
    address = getattr(last, "address", last if isinstance(last, str) else None)
    pid = getattr(last, "pid", None)
    failures = getattr(dask_error, "allowed_failures", None)
    error = WorkerCrashedError(pid if isinstance(pid, int) else None, None)
    where = f"Dask worker {address}" if address else "a Dask worker"
    if isinstance(pid, int):
        where += f" (pid {pid})"
    tries = (
        f"; Dask ran it on {failures + 1} worker(s) in all "
        f"(distributed.scheduler.allowed-failures={failures})"
        if isinstance(failures, int)
        else ""
    )
    error.args = (f"{where} died while running this job{tries}",)
    error.__cause__ = dask_error
    return error


class DaskBackend:
    name = "dask"
    kill_limitation = KILL_UNSUPPORTED

    def __init__(
        self, setup: BackendSetup, *, address: Optional[str] = None, client: Any = None
    ) -> None:
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
        self._queue = setup.queue
        self._outcomes = setup.outcomes
        self._workers = workers = setup.workers
        self._on_broken = weak_callback(setup.on_broken)
        initializer, initargs = setup.initializer, setup.initargs
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
            self._cluster, self._client = _start_local_cluster(workers)
        self._per_worker = PoolInstances(self._client, self._token)
        self._in_flight: dict[str, tuple[Job, Any]] = {}
        self._deadlines: dict[str, float] = {}
        self._events: SimpleQueue[Any] = SimpleQueue()
        self._wake_pending = False
        self._closing = False
        self._terminating = False
        self._broken: Optional[BaseException] = None
        self._nthreads: Optional[int] = None
        self._nthreads_at = 0.0
        try:
            if self._setup is not None:
                self._install_initializer()
            self._refresh_nthreads()
        except BaseException:
            self._close()
            raise
        self._thread = threading.Thread(target=self._run, name="jobpool-dask", daemon=True)
        self._thread.start()

    # --- the backend contract -------------------------------------------------------------------

    def prepare(self, job: Job) -> None:
        """Serialize the job in the caller's thread, so a bad argument fails at submit."""
        serialize_job(job)

    def prepare_function(self, fn: Callable[..., Any]) -> PreparedFunction:
        """Serialize ``fn`` once for a whole ``map`` call."""
        return dumps(fn, "fn"), None, ()

    def offer(self, job: Job) -> bool:
        """Jobs always go through the queue: the feeder thread bounds what Dask holds."""
        return False

    def notify(self) -> None:
        if not self._wake_pending and len(self._in_flight) < self._workers:
            self._wake()

    def kill(self, future: Future[Any]) -> bool:
        """A running task cannot be stopped (see ``kill_limitation``)."""
        return False

    def worker_count(self) -> int:
        """Jobs that can run at once: ``workers``, or fewer if the cluster has fewer threads."""
        if self._nthreads is None:
            return self._workers
        return min(self._workers, self._nthreads)

    def shutdown(self, wait: bool) -> None:
        self._closing = True
        self._wake()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def terminate(self) -> None:
        self._terminating = True
        self._closing = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # --- setting up -----------------------------------------------------------------------------

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
                raise self._initializer_error(failure, worker, at_start=True)

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

    @staticmethod
    def _initializer_error(
        failure: bytes, worker: Optional[str] = None, at_start: bool = False
    ) -> InitializerError:
        cause = unpack_exception(failure)
        where = f" on Dask worker {worker}" if worker else " on a Dask worker"
        outcome = (
            "no pool was created" if at_start else "the pool is broken and accepts no more jobs"
        )
        error = InitializerError(
            f"the pool's initializer raised {type(cause).__name__}: {cause}{where}; {outcome}"
        )
        error.__cause__ = cause
        return error

    def _refresh_nthreads(self) -> None:
        try:
            self._nthreads = sum(self._client.nthreads().values())
        except Exception:
            self._nthreads = None
        self._nthreads_at = time.monotonic()

    # --- the dispatcher thread ------------------------------------------------------------------

    def _wake(self) -> None:
        self._wake_pending = True
        self._events.put(None)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug here must not leave futures hanging forever
            _log.exception("jobpool Dask dispatcher failed")
            error = InitializerError(f"the Dask backend's dispatcher failed: {exc!r}")
            self._break(error)
            self._abandon_in_flight(error)
        finally:
            self._close()

    def _loop(self) -> None:
        while True:
            self._wake_pending = False
            self._submit_jobs()
            if self._closing and not self._in_flight and self._drained():
                return
            timeout = None
            if self._deadlines:
                timeout = max(0.0, min(self._deadlines.values()) - time.monotonic())
            try:
                events = [self._events.get(timeout=timeout)]
            except Empty:
                events = []
            while True:
                try:
                    events.append(self._events.get_nowait())
                except Empty:
                    break
            finished = [event for event in events if event is not None]
            if finished:
                self._collect(finished)
            if self._deadlines:
                self._expire_deadlines()
            if self._terminating:
                self._abandon_in_flight(JobKilledError("the pool was terminated"))

    def _drained(self) -> bool:
        return self._terminating or self._broken is not None or not self._queue.qsize()

    def _submit_jobs(self) -> None:
        while len(self._in_flight) < self._workers and not self._terminating:
            job = self._queue.get_nowait()
            if job is None:
                return
            if self._broken is not None:
                self._outcomes.fail_pending(job, self._broken)
                continue
            if not self._outcomes.start(job):
                continue
            self._submit(job)

    def _submit(self, job: Job) -> None:
        assert job.fn_bytes is not None and job.body is not None
        kind = RUN_CALL if isinstance(job.work, Call) else RUN_CHUNK
        # A readable key for Dask's dashboard and logs: "jobpool-square-<pool>-<job id>".
        name = re.sub(r"\W+", "_", str(getattr(job.work.fn, "__name__", "job"))).strip("_")
        key = f"jobpool-{name or 'job'}-{self._token[:12]}-{job.id}"
        token = self._token if self._setup is not None else None
        try:
            instances = self._per_worker.key()  # installs its plugin when handles travel
            task = self._client.submit(
                run_on_worker, token, kind, job.fn_bytes, job.body, instances, key=key, pure=False
            )
        except Exception as exc:
            self._outcomes.fail(job, exc)
            return
        job.body = None  # the client holds its own copy now
        self._in_flight[key] = (job, task)
        if job.timeout is not None:
            self._deadlines[key] = time.monotonic() + job.timeout
        task.add_done_callback(self._events.put)

    def _collect(self, finished: list[Any]) -> None:
        """Resolve the jobs whose tasks finished, fetching all their results in one round trip."""
        entries = []
        for task in finished:
            entry = self._in_flight.pop(task.key, None)
            self._deadlines.pop(task.key, None)
            if entry is None or entry[1] is not task:  # timed out or terminated already
                task.release()
                continue
            entries.append(entry)
        done = [(job, task) for job, task in entries if task.status == "finished"]
        values: list[Any] = []
        if done:
            try:
                values = self._client.gather([task for _, task in done])
            except Exception:
                values = [self._gather_one(task) for _, task in done]
        for (job, _), value in zip(done, values):
            self._resolve(job, value)
        for job, task in entries:
            if task.status != "finished":
                self._fail_from_dask(job, task)
            task.release()
        if time.monotonic() - self._nthreads_at > NTHREADS_REFRESH_SECONDS:
            self._refresh_nthreads()

    def _gather_one(self, task: Any) -> Any:
        try:
            return self._client.gather(task)
        except Exception as exc:
            return exc

    def _resolve(self, job: Job, value: Any) -> None:
        if isinstance(value, BaseException):  # its result was lost before we could fetch it
            lost = WorkerCrashedError(None, None)
            lost.args = (
                f"the result of this job could not be fetched from its Dask worker: {value!r}",
            )
            lost.__cause__ = value
            self._outcomes.fail(job, lost)
            return
        tag, data = value
        if tag == OK:
            try:
                result = pickle.loads(data)
            except BaseException as exc:
                self._outcomes.fail(job, exc)
            else:
                self._outcomes.succeed(job, result)
        elif tag == RAISED:
            self._outcomes.fail(job, unpack_exception(data))
        else:
            error = self._initializer_error(data)
            self._break(error)
            self._outcomes.fail(job, error)

    def _fail_from_dask(self, job: Job, task: Any) -> None:
        from distributed.scheduler import KilledWorker

        error: BaseException
        if task.status == "error":
            try:
                dask_error = task.exception(timeout=10)
            except Exception as exc:
                dask_error = exc
            if isinstance(dask_error, KilledWorker):
                error = _crash_error(dask_error)
                self._outcomes.count("worker_restarts")  # its nanny, if any, starts a new one
            else:  # e.g. jobpool itself cannot be imported on the worker
                error = JobpoolError(
                    f"Dask could not run this job: {type(dask_error).__name__}: {dask_error} "
                    "(jobpool and the job's modules must be importable on every Dask worker)"
                )
                error.__cause__ = dask_error
        else:
            error = JobpoolError(
                f"Dask dropped this job's task (status {task.status!r}): the client or the "
                "scheduler went away, or someone cancelled it on the cluster"
            )
        self._outcomes.fail(job, error)

    def _expire_deadlines(self) -> None:
        now = time.monotonic()
        expired = [key for key, deadline in self._deadlines.items() if deadline <= now]
        tasks = []
        for key in expired:
            del self._deadlines[key]
            job, task = self._in_flight.pop(key)
            assert job.timeout is not None
            self._outcomes.fail(job, JobTimeoutError(job.timeout), timed_out=True)
            tasks.append(task)
        self._cancel(tasks)

    def _abandon_in_flight(self, error: BaseException) -> None:
        """Fail every job still on the cluster and cancel its task."""
        entries = list(self._in_flight.values())
        self._in_flight.clear()
        self._deadlines.clear()
        for job, _ in entries:
            self._outcomes.fail(job, error)
        self._cancel([task for _, task in entries])

    def _cancel(self, tasks: list[Any]) -> None:
        """Cancel tasks on the cluster: a waiting one never runs, a running one runs on."""
        if not tasks:
            return
        try:
            self._client.cancel(tasks)
        except Exception:  # the client is closed: nothing to cancel any more
            pass
        for task in tasks:
            task.release()

    def _break(self, error: BaseException) -> None:
        if self._broken is not None:
            return
        self._broken = error
        self._closing = True
        self._on_broken(error)
        for job in self._queue.drain():
            self._outcomes.fail_pending(job, error)

    def _close(self) -> None:
        self._per_worker.close()  # closes the per_worker instances its jobs built
        self._remove_initializer()
        self._close_cluster()

    def _close_cluster(self) -> None:
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
