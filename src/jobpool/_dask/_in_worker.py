"""What runs inside the Dask workers: a job's task, taking back tasks, and the pool's plugins.

Everything here is sent to (or installed on) the Dask worker processes and must stay importable
there without the parent-side machinery: :func:`run_on_worker` is the task of every job (claim
it, check the pool's initializer, unpickle, run, send the outcome back as bytes);
:func:`withdraw_tasks` takes back the tasks that have not started (``Pool.kill()``, or tasks
stuck behind a long job); :func:`set_slots` sets the pool's resource on a worker (see
``_slots``); :class:`InitializerPlugin` runs the pool's initializer once per worker, and
:class:`InstancesPlugin` keeps the ``per_worker`` instances a pool's jobs build on a worker and
closes them with the pool (see ``_per_worker``, its client side).

The client side imports this module for the names it sends; nothing here imports the client
side.
"""

from __future__ import annotations

import io
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, Optional

from distributed.diagnostics.plugin import WorkerPlugin

from .. import _main_globals
from .._errors import InitializerError, JobpoolError
from .._execution import KeptFunctions, run_to_reply
from .._instances import Instances, used_by_this_thread
from .._placeholders import INPUT
from .._protocol import INIT_FAILED, OK, RAISED, WITHDRAWN
from .._remote_exceptions import pack_exception

_init_lock = threading.Lock()
# Pool token -> None once its initializer ran here, or the packed exception it raised.
_init_outcomes: dict[str, Optional[bytes]] = {}
_functions = KeptFunctions()  # large functions, by their bytes (a map sends the same often)
# Functions whose pickle is at least this large are kept unpickled (smaller ones unpickle
# cheaply); smaller than the process backend's KEYED_FUNCTION_MIN_BYTES: each task pays Dask more.
KEPT_FUNCTION_MIN_BYTES = 1024

# Which of the pool's tasks this worker process has started, and which it must not start: the
# pool takes back a task that waits here (Pool.kill(), or a worker whose running job turned out
# long), and only this process can tell whether it started meanwhile.
_claims_lock = threading.Lock()
_running_keys: set[str] = set()
_withdrawn_keys: OrderedDict[str, None] = OrderedDict()
MAX_WITHDRAWN_KEYS = 10_000  # keys of tasks taken back before they reached this worker
# Dask task states in which a task has not started (and may still be taken back).
NOT_STARTED_STATES = frozenset({"released", "waiting", "ready", "constrained"})


def initializer_plugin_name(token: str) -> str:
    return f"jobpool-initializer-{token}"


class InitializerPlugin(WorkerPlugin):
    """Runs the pool's initializer once in every Dask worker, including ones that join later.

    It never raises into Dask (Dask only logs a plugin failure on a worker that joins later):
    it records the outcome, and every job of the pool checks it before it runs.
    """

    def __init__(self, token: str, setup: bytes) -> None:
        self.token = token
        self.setup_bytes = setup
        self.name = initializer_plugin_name(token)

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
        plugin = get_worker().plugins.get(initializer_plugin_name(token))
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
    if len(fn_bytes) < KEPT_FUNCTION_MIN_BYTES:
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

    ``instances`` names the pool whose per_worker instances the job uses (see _dask._per_worker).
    ``inputs``: the values of the futures among the job's arguments, each the reply of this
    pool's task that made it (Dask hands it over) or one pickled by the pool (_dask._inputs).
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
                tag, data = run_to_reply(kind, fn, body)
            else:
                try:
                    load = loader(inputs)
                except BaseException as exc:
                    return RAISED, pack_exception(exc), time.perf_counter() - start
                tag, data = run_to_reply(kind, fn, body, load)
        return tag, data, time.perf_counter() - start
    finally:
        with _claims_lock:
            _running_keys.discard(key)


def loader(replies: tuple[Any, ...]) -> Callable[[bytes], Any]:
    """How a worker loads a job's arguments: each placeholder becomes its input's value."""
    values = []
    for reply in replies:
        if not (isinstance(reply, tuple) and len(reply) == 3 and reply[0] == OK):
            raise JobpoolError(f"an input of this job did not arrive as a result: {reply!r:.200}")
        values.append(pickle.loads(reply[1]))

    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            if isinstance(pid, tuple) and len(pid) == 2 and pid[0] == INPUT:
                return values[pid[1]]
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")

    return lambda data: Unpickler(io.BytesIO(data)).load()


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
    """Set the pool's resource on this worker to its quota (see _slots); return it."""
    amount = amounts.get(dask_worker.contact_address, amounts.get(dask_worker.address))
    if amount is None:
        return -1
    await dask_worker.set_resources(**{resource: amount})
    return amount


# --- per_worker ---------------------------------------------------------------------------------

# (worker address, pool key) -> the instances that pool's jobs built on that worker. Keyed by
# address too: a cluster of threads (processes=False) runs several workers in one process.
_instances: dict[tuple[str, str], Instances] = {}
_instances_lock = threading.Lock()


def instances_plugin_name(key: str) -> str:
    return f"jobpool-per-worker-{key}"


class InstancesPlugin(WorkerPlugin):
    """Gives a pool its own instances on each Dask worker, and closes them at the end."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.name = instances_plugin_name(key)

    def setup(self, worker: Any = None) -> None:
        address = str(worker.address)
        with _instances_lock:
            if (address, self.key) not in _instances:
                _instances[address, self.key] = Instances(f"Dask worker {address}")

    def teardown(self, worker: Any = None) -> None:
        with _instances_lock:
            instances = _instances.pop((str(worker.address), self.key), None)
        if instances is not None:
            instances.close()


@contextmanager
def pool_instances(key: Optional[str]) -> Iterator[None]:
    """Around a task of the pool ``key`` (None: the pool has no plugin; the thread's own)."""
    instances = None
    if key is not None:
        from distributed import get_worker

        try:
            address = str(get_worker().address)
        except ValueError:  # not inside a Dask worker
            address = ""
        instances = _instances.get((address, key))
    with used_by_this_thread(instances):
        yield
