"""The Dask backend against real Dask clusters of worker processes (no mocks).

The behaviour every backend shares (results, map, laziness, the concurrency bound, backpressure,
pickling of lambdas) is tested on Dask too, in test_every_backend.py; this file holds what is
specific to Dask: cluster modes, crashes, initializers, timeouts and kill.

Most tests share one ``LocalCluster`` (2 worker processes x 2 threads) that runs in a subprocess
for the whole run (conftest's ``dask_address``), and connect to it with ``address=`` or
``client=``: starting a cluster takes seconds, and a cluster kept in this process would show its
worker processes to the leftover-process guard of every test. The few tests that need the pool's
own cluster (crash handling, cleanup) start one each, and are marked slow. Jobs wait at the
test's gate (``jobs.StartGate``, a Unix socket the workers on this machine connect to), and every
wait has a deadline that fails loudly instead of hanging.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from typing import Any, Optional

import pytest
from distributed import Client

import jobs
from conftest import WAIT, MakePool, wait_until
from jobpool import (
    InitializerError,
    JobKilledError,
    JobTimeoutError,
    Pool,
    RemoteError,
    RemoteTraceback,
    ResultLoadError,
    SchedulerLostError,
    SerializationError,
    WorkerCrashedError,
)
from jobpool._dask import _slots as _dask_slots
from jobpool._dask._client import new_client

# Tests on the run's shared cluster are quick and run always; a test that starts a cluster of its
# own costs seconds, and is marked slow (run by CI, see conftest.py, and with -m slow).

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def cluster_address(dask_address: str) -> str:
    """The run's shared LocalCluster (see conftest.dask_address)."""
    return dask_address


# --- results --------------------------------------------------------------------------------------


# --- the bound on running jobs, backpressure ------------------------------------------------------


# --- errors ---------------------------------------------------------------------------------------


def test_exception_keeps_its_type_and_remote_traceback(make_pool: MakePool) -> None:
    pool = make_pool("dask")
    with pytest.raises(ValueError, match="boom") as info:
        pool.submit(jobs.raise_value_error, "boom").result(WAIT)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "raise_value_error" in cause.tb
    with pytest.raises(RemoteError, match="UnpicklableError"):
        pool.submit(jobs.raise_unpicklable_error).result(WAIT)
    # Dask workers import distributed, which registers tblib's reducer for every exception
    # class; a built-in exception still comes back whole (SystemExit's code was lost).
    exit_error = pool.submit(jobs.raise_builtin, "SystemExit", 3).exception(WAIT)
    assert isinstance(exit_error, SystemExit) and exit_error.code == 3
    # One bad item of a map raises when its turn comes; the others are not lost.
    results = pool.map(lambda x: 1 // (x - 3), range(5), chunksize=5, timeout=WAIT)
    assert [next(results) for _ in range(3)] == [-1, -1, -1]
    with pytest.raises(ZeroDivisionError):
        next(results)
    # The pool goes on.
    assert pool.submit(jobs.square, 3).result(WAIT) == 9


def test_unpicklable_argument_names_the_part(make_pool: MakePool) -> None:
    pool = make_pool("dask")
    with pytest.raises(SerializationError) as info:
        pool.submit(jobs.identity, jobs.Unpicklable())
    assert info.value.path == "args[0].conn"
    assert "args[0].conn" in str(info.value)
    assert pool.stats().submitted == 0
    with pytest.raises(SerializationError, match="result"):
        pool.submit(jobs.return_lock).result(WAIT)
    assert pool.submit(jobs.square, 4).result(WAIT) == 16


@pytest.mark.parametrize("how", ["lock", "module", "rebuild"])
def test_a_result_that_cannot_travel_fails_only_its_item(make_pool: MakePool, how: str) -> None:
    """As on processes: an item whose result cannot be pickled on the Dask worker, or loaded
    in the caller, fails alone with an error that says so; a single job's result too."""
    pool = make_pool("dask")
    if how == "lock":
        fn: Any = jobs.lock_at
        kind: type[SerializationError] = SerializationError
    else:
        fn = functools.partial(jobs.unloadable_at, how=how)
        kind = ResultLoadError
    errors: list[BaseException] = []
    got = list(pool.map(fn, range(1000), chunksize=1000, on_error=errors.append, timeout=WAIT))
    assert got == [i for i in range(1000) if i != 500]
    assert [type(error) for error in errors] == [kind]
    assert isinstance(errors[0], SerializationError)
    assert errors[0].path == "the item's result"
    with pytest.raises(kind) as info:
        pool.submit(fn, 500).result(WAIT)
    assert info.value.path == "the job's result"
    if kind is ResultLoadError:
        assert "in the caller" in str(info.value)
        assert isinstance(info.value.__cause__, (ModuleNotFoundError, RuntimeError))


def test_job_timeout(make_pool: MakePool, gate: jobs.StartGate) -> None:
    pool = make_pool("dask")
    held = pool.options(timeout=0.5).submit(jobs.gate_job, gate.address, "held", "returned")
    gate.wait_for("held")
    # The task waits at the gate until the test releases it: only its time limit can end it.
    with pytest.raises(JobTimeoutError, match=r"timeout of 0\.5 s"):
        held.result(WAIT)
    assert pool.stats().timed_out == 1
    gate.release("held")  # the task returns; its result is dropped
    assert pool.submit(jobs.square, 5).result(WAIT) == 25


@pytest.mark.slow  # it waits 10 s for a job that does not come while the bug stands
@pytest.mark.xfail(
    strict=True,
    reason="a task that timed out and still runs holds its place on its Dask worker until it "
    "returns (docs/dask.md, Time limits: a known limit)",
)
def test_the_slot_of_a_job_that_timed_out_goes_to_the_next_job(
    make_pool: MakePool, gate: jobs.StartGate
) -> None:
    pool = make_pool("dask")
    held = pool.options(timeout=0.5).submit(jobs.gate_job, gate.address, "held", "returned")
    gate.wait_for("held")
    with pytest.raises(JobTimeoutError):
        held.result(WAIT)
    try:
        # The pool goes on while the task still runs on its worker (a slot frees: it is
        # quick when it does, so a short deadline only shortens the failure).
        assert pool.submit(jobs.square, 5).result(10) == 25
    finally:
        gate.release("held")


def test_pool_job_timeout_applies_per_map_item(make_pool: MakePool) -> None:
    pool = make_pool("dask", job_timeout=0.5)
    results = pool.map(jobs.sleep_for, [0.01, 3, 0.01], timeout=WAIT)
    assert next(results) == 0.01
    with pytest.raises(JobTimeoutError):
        next(results)


def test_kill_of_a_running_job_raises_clearly(make_pool: MakePool, gate: jobs.StartGate) -> None:
    pool = make_pool("dask", 1)
    running = pool.submit(jobs.gate_job, gate.address, "running", 1)
    waiting = pool.submit(jobs.square, 3)
    gate.wait_for("running")
    with pytest.raises(NotImplementedError, match="cannot stop a running job on the Dask"):
        pool.kill(running)
    assert pool.kill(waiting) is True  # still in the pool's queue: cancelled
    assert waiting.cancelled()
    gate.release("running")
    assert running.result(WAIT) == 1
    assert pool.kill(running) is False  # finished


# --- initializer ----------------------------------------------------------------------------------


def test_initializer_runs_once_per_worker(
    make_pool: MakePool, cluster_address: str, tmp_path: Any
) -> None:
    record = str(tmp_path / "pids")
    pool = make_pool("dask", 2, initializer=jobs.append_pid, initargs=(record,))
    assert list(pool.map(jobs.square, range(20), chunksize=1, timeout=WAIT)) == [
        x * x for x in range(20)
    ]
    with open(record) as f:
        pids = f.read().split()
    with new_client(cluster_address) as client:
        worker_pids = client.run(os.getpid)
    assert sorted(pids) == sorted(str(pid) for pid in worker_pids.values())


def test_failing_initializer_is_an_initializer_error(make_pool: MakePool) -> None:
    with pytest.raises(InitializerError, match="initializer says no") as info:
        make_pool("dask", initializer=jobs.fail_initializer)
    assert isinstance(info.value.__cause__, RuntimeError)
    # The plugin is gone from the cluster: a new pool there is not affected.
    assert make_pool("dask").submit(jobs.square, 2).result(WAIT) == 4


@pytest.mark.slow  # a cluster of its own
def test_initializer_failing_on_a_restarted_worker_breaks_the_pool(tmp_path: Any) -> None:
    """The pool's own cluster of one worker: it crashes, and its replacement cannot initialize."""
    marker = str(tmp_path / "now-fail")
    with Pool(1, backend="dask", initializer=jobs.fail_if_exists, initargs=(marker,)) as pool:
        assert pool.submit(jobs.square, 2).result(WAIT) == 4
        open(marker, "w").close()
        with pytest.raises(WorkerCrashedError):
            pool.submit(jobs.exit_now).result(WAIT)
        # The only worker is restarted by its nanny; its initializer raises there.
        with pytest.raises(InitializerError, match="exists") as info:
            pool.submit(jobs.square, 3).result(WAIT)
        assert isinstance(info.value.__cause__, RuntimeError)
        with pytest.raises(InitializerError):
            pool.submit(jobs.square, 4)


def test_unpicklable_initargs_are_a_serialization_error(make_pool: MakePool) -> None:
    with pytest.raises(SerializationError, match="initializer"):
        make_pool("dask", initializer=jobs.set_state, initargs=(threading.Lock(),))


# --- where the cluster comes from -----------------------------------------------------------------


def test_a_client_loop_that_starts_late_is_waited_for_again(
    cluster_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """distributed fails a client whose event loop thread has not started within its fixed 10 s
    with a bare AssertionError; the pool tries again (seen on a busy CI machine)."""
    from distributed.utils import LoopRunner

    real = LoopRunner._start_unlocked
    calls = []

    def _start_unlocked(self: Any) -> None:  # named as distributed's, where it fails
        calls.append(self)
        if len(calls) == 1:
            raise AssertionError("the loop thread did not start")
        real(self)

    monkeypatch.setattr(LoopRunner, "_start_unlocked", _start_unlocked)
    with Pool(2, backend="dask", address=cluster_address) as pool:
        assert pool.submit(jobs.square, 6).result(WAIT) == 36
    assert len(calls) >= 2


def test_an_assertion_elsewhere_in_a_client_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    import distributed

    calls = []

    def client(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise AssertionError("something else")

    monkeypatch.setattr(distributed, "Client", client)
    with pytest.raises(AssertionError, match="something else"):
        new_client("tcp://127.0.0.1:1")
    assert len(calls) == 1


def test_address_mode_leaves_the_cluster_running(cluster_address: str) -> None:
    with Pool(2, backend="dask", address=cluster_address) as pool:
        assert pool.submit(jobs.square, 6).result(WAIT) == 36
    with new_client(cluster_address) as client:
        assert client.submit(jobs.square, 2).result(WAIT) == 4


def test_client_mode_leaves_the_client_open(cluster_address: str) -> None:
    with new_client(cluster_address) as client:
        with Pool(2, backend="dask", client=client) as pool:
            assert list(pool.map(jobs.square, range(5), timeout=WAIT)) == [0, 1, 4, 9, 16]
        assert client.status == "running"
        assert client.submit(jobs.add, 2, 3).result(WAIT) == 5


def test_bad_cluster_arguments(cluster_address: str) -> None:
    with pytest.raises(TypeError, match="not both"):
        Pool(backend="dask", address=cluster_address, client=object())
    with pytest.raises(TypeError, match=r"distributed\.Client"):
        Pool(backend="dask", client=object())
    with pytest.raises(ValueError, match="only to backend='dask'"):
        Pool(backend="thread", address=cluster_address)


@pytest.mark.slow  # a cluster of its own
def test_own_cluster_crash_and_cleanup() -> None:
    """The pool's own LocalCluster: a crash fails one job, and shutdown leaves no process."""
    before = {p.pid for p in multiprocessing.active_children()}
    pool = Pool(2, backend="dask")
    try:
        cluster_pids = {p.pid for p in multiprocessing.active_children()} - before
        assert cluster_pids, "the pool should run its own worker processes"
        assert pool.submit(jobs.square, 3).result(WAIT) == 9
        crashed = pool.submit(jobs.exit_now, 3)
        with pytest.raises(WorkerCrashedError, match="died while running this job"):
            crashed.result(WAIT)
        assert pool.stats().failed == 1
        assert pool.stats().worker_restarts == 1
        # The other jobs go on (the dead worker is restarted by its nanny).
        assert list(pool.map(jobs.square, range(10), timeout=WAIT)) == [x * x for x in range(10)]
    finally:
        pool.shutdown(wait=True)
    assert not {p.pid for p in multiprocessing.active_children()} - before
    for pid in cluster_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.slow  # a cluster of its own
def test_own_cluster_shutdown_without_wait_finishes_queued_jobs() -> None:
    pool = Pool(1, backend="dask")
    futures = [pool.submit(jobs.sleep_for, 0.05) for _ in range(4)]
    pool.shutdown(wait=False)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(jobs.square, 1)
    assert [f.result(WAIT) for f in futures] == [0.05] * 4
    pool.shutdown(wait=True)  # now wait for the cluster to close


def test_terminate_fails_running_jobs(make_pool: MakePool, gate: jobs.StartGate) -> None:
    pool = make_pool("dask", 1)
    running = pool.submit(jobs.gate_job, gate.address, "running", 1)
    waiting = pool.submit(jobs.square, 3)
    gate.wait_for("running")
    pool.terminate()
    assert waiting.cancelled()
    with pytest.raises(JobKilledError, match="terminated"):
        running.result(WAIT)
    gate.release("running")  # the task itself runs on until it returns: Dask cannot stop it


# --- the pool's own cluster admits only the pool (issue 23, item 9) ------------------------------
# Any local user can reach loopback; before, LocalCluster's plain TCP let one of them run code as
# the pool's user (Client("tcp://127.0.0.1:<port>").run(os.getuid)).


def _listeners(pool: Pool) -> list[str]:
    """The addresses the pool's own cluster listens on: scheduler, workers and nannies."""
    backend: Any = pool._backend  # type: ignore[attr-defined]
    addresses = [backend._cluster.scheduler_address]
    for address, worker in backend._client.scheduler_info()["workers"].items():
        addresses += [address, worker["nanny"]]
    return addresses


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def _tls_refused(address: str, certificate: Any = None) -> str:
    """Connect with TLS, presenting no certificate or one of our own; how the listener refused.

    Under TLS 1.3 the client finishes its half of the handshake before the server has checked
    the client's certificate: the refusal is the alert (or the close) that the first read gets.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # whoever the server is, it is the client on trial
    if certificate is not None:
        with tempfile.TemporaryDirectory() as directory:
            cert, key = os.path.join(directory, "cert"), os.path.join(directory, "key")
            with open(cert, "w") as f:
                f.write(certificate.tls_client_cert)
            with open(key, "w") as f:
                f.write(certificate.tls_client_key)
            context.load_cert_chain(cert, key)
    with socket.create_connection(_host_port(address), timeout=WAIT) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"\0" * 8)  # the start of a Dask frame
                answer = tls.recv(1)
        except (ssl.SSLError, ConnectionError) as exc:
            return repr(exc)
    assert answer == b"", f"{address} answered a client that it should have refused"
    return "closed"


def _http_status(port: int, path: str) -> int:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


# A separate program (as another user would run): Client(address, timeout=...) must fail. An
# asynchronous client, since a failed synchronous one can hang in its __del__ on older
# distributed (2024.8 on Python 3.9).
ROGUE_CLIENT = """
import asyncio
import sys

from distributed import Client
from distributed.security import Security


async def attempt(address, security):
    try:
        client = await Client(address, security=security, asynchronous=True, timeout=3)
    except Exception as exc:
        return "refused " + type(exc).__name__
    await client.run(print, "RAN CODE")
    await client.close()
    return "CONNECTED"


tls_address, tcp_address = sys.argv[1:]
for address, security in [
    (tls_address, None),
    (tcp_address, None),
    (tls_address, Security.temporary()),
]:
    print(address, "with" if security else "without", "credentials:",
          asyncio.run(attempt(address, security)), flush=True)
"""


@pytest.mark.slow  # a cluster of its own
def test_own_cluster_admits_only_the_pool() -> None:
    from distributed.security import Security

    with Pool(2, backend="dask") as pool:
        assert pool.submit(jobs.square, 3).result(WAIT) == 9
        listeners = _listeners(pool)
        assert len(listeners) == 5  # a scheduler, and two workers with their nannies
        assert all(address.startswith("tls://") for address in listeners), listeners
        scheduler = listeners[0]
        host, port = _host_port(scheduler)
        # Another program, as another local user would run it: a plain client on the address as
        # it is and on plain TCP, and a client with credentials of its own (anyone can make
        # some). None gets a client that can run code.
        rogue = subprocess.run(
            [sys.executable, "-c", ROGUE_CLIENT, scheduler, f"tcp://{host}:{port}"],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        attempts = rogue.stdout.splitlines()
        assert len(attempts) == 3 and all(" refused " in line for line in attempts), (
            rogue.stdout + rogue.stderr[-3000:]
        )
        # Every listener, the workers' and nannies' too, refuses a TLS client without the
        # pool's certificate: no rogue client runs code, and no rogue worker joins.
        foreign = Security.temporary()
        for address in listeners:
            _tls_refused(address)
            _tls_refused(address, foreign)
        # The HTTP servers Dask starts anyway (they check no certificate) serve nothing.
        backend: Any = pool._backend  # type: ignore[attr-defined]
        assert _http_status(backend._cluster.scheduler.http_server.port, "/health") == 404
        assert (
            _http_status(backend._cluster.scheduler.http_server.port, "/info/main/workers.html")
            == 404
        )
        for worker in backend._client.scheduler_info()["workers"].values():
            assert _http_status(worker["services"]["dashboard"], "/health") == 404
        # The pool itself goes on as before.
        assert list(pool.map(jobs.square, range(20))) == [x * x for x in range(20)]


def test_own_cluster_without_cryptography_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import cryptography -> ImportError
    before = {p.pid for p in multiprocessing.active_children()}
    with pytest.raises(
        ImportError, match=r"'cryptography' package: pip install \"jobpool\[dask\]\""
    ):
        Pool(backend="dask")
    assert {p.pid for p in multiprocessing.active_children()} == before


@pytest.mark.slow  # a cluster of its own
def test_a_tls_cluster_you_bring_through_client_or_dask_config() -> None:
    """The credentials for a TLS cluster you bring travel with the client you pass (client=),
    or come from Dask's configuration (address=), as for any distributed.Client."""
    import dask
    from distributed import LocalCluster
    from distributed.security import Security

    security = Security.temporary()
    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        security=security,
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
    )
    try:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        client = Client(address, security=security, set_as_default=False)
        with client, Pool(2, backend="dask", client=client) as pool:
            assert list(pool.map(jobs.square, range(5))) == [0, 1, 4, 9, 16]
        settings = {
            "distributed.comm.tls.ca-file": security.tls_ca_file,
            "distributed.comm.tls.client.cert": security.tls_client_cert,
            "distributed.comm.tls.client.key": security.tls_client_key,
            "distributed.comm.require-encryption": True,
        }
        with dask.config.set(settings), Pool(2, backend="dask", address=address) as pool:
            assert pool.submit(jobs.square, 7).result(WAIT) == 49
        with pytest.raises(OSError, match="cannot connect to the Dask scheduler"):
            Pool(2, backend="dask", address=address)  # without them
    finally:
        cluster.close()


# --- jobs waiting on the cluster's workers ------------------------------------------------------
# A worker whose jobs are short holds tasks beyond its slots (see jobpool/_dask/_slots.py). The
# shared cluster has 4 threads (2 workers x 2), more than the pools below have workers.


@pytest.fixture
def marks(tmp_path: Any) -> str:
    directory = tmp_path / "marks"
    directory.mkdir()
    return str(directory)


def _dispatcher(pool: Pool) -> Any:
    return pool._backend._dispatcher  # type: ignore[attr-defined]


def _warm(pool: Pool) -> None:
    """Run short jobs until every worker holding slots knows its jobs are short."""
    dispatcher = _dispatcher(pool)

    def warm() -> bool:
        return all(s.job_seconds < 0.01 for s in dispatcher.workers.slots.values() if s.quota)

    for _ in range(100):
        assert list(pool.map(jobs.square, range(20), chunksize=1, timeout=WAIT)) == [
            i * i for i in range(20)
        ]
        if dispatcher.call(warm):
            return
    raise AssertionError("the pool's workers never ran short jobs")


# Dask worker task states of a task that ran (or will not run): not the pool's running or waiting.
ENDED_TASK_STATES = frozenset({"memory", "released", "forgotten", "error", "cancelled"})


def _waiting(pool: Pool) -> list[Future[Any]]:
    """The jobs sent to a worker that wait there behind running ones, worker by worker."""
    dispatcher = _dispatcher(pool)
    return dispatcher.call(  # type: ignore[no-any-return]
        lambda: [t.job.future for s in dispatcher.workers.slots.values() for t in s.waiting()]
    )


def _each_ran_once(futures: list[Future[Any]], marks: str, tags: list[int]) -> None:
    assert [f.result(WAIT) for f in futures] == tags
    assert sorted(jobs.runs_in(marks)) == sorted(str(tag) for tag in tags)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_at_most_workers_jobs_run_while_more_wait_on_the_cluster(
    make_pool: MakePool, cluster_address: str, gate: jobs.StartGate, workers: int
) -> None:
    pool = make_pool("dask", workers)
    _warm(pool)
    n = 3 * workers + 4
    futures = [pool.submit(jobs.gate_job, gate.address, i, i) for i in range(n)]
    for _ in range(workers):
        gate.wait()
    wait_until(lambda: len(_waiting(pool)) == n - workers, "the other jobs to go to the workers")
    # Every job is on a worker now, the waiting ones ready to run: the cluster has threads for
    # more of them, and still runs no more than the pool's slots.
    marker = f"-{pool._backend._token[:12]}-"  # type: ignore[attr-defined]
    with new_client(cluster_address) as client:

        def states() -> list[str]:
            """The states of the pool's tasks that have not ended on the workers (a worker
            forgets a finished task when the scheduler says so; counting only these keeps the
            count to the gated jobs; why it once never matched is not known)."""
            per_worker = client.run(jobs.task_states, marker)
            return [
                state
                for tasks in per_worker.values()
                for state in tasks.values()
                if state not in ENDED_TASK_STATES
            ]

        wait_until(lambda: len(states()) == n, "every task to reach its worker")
        assert states().count("executing") == workers
    assert gate.most_inside == workers
    assert pool.stats().workers == workers
    gate.release_in_turn(n)
    assert [f.result(WAIT) for f in futures] == list(range(n))
    assert gate.most_inside == workers


def test_killing_a_job_waiting_on_a_worker_means_it_never_runs(
    make_pool: MakePool, gate: jobs.StartGate, marks: str
) -> None:
    pool = make_pool("dask", 2)
    _warm(pool)
    held = [pool.submit(jobs.gate_job, gate.address, f"a{i}", i) for i in range(2)]
    gate.wait_for("a0")
    gate.wait_for("a1")
    futures = [pool.submit(jobs.mark_run, marks, i, i) for i in range(6)]
    wait_until(lambda: set(_waiting(pool)) == set(futures), "the jobs to wait on the workers")
    victim = futures[3]
    assert victim.running() and not victim.cancel()  # on a worker: as good as running
    assert pool.kill(victim) is True
    with pytest.raises(JobKilledError, match="before it started"):
        victim.result(WAIT)
    assert pool.kill(victim) is False
    gate.release("a0")
    gate.release("a1")
    assert [f.result(WAIT) for f in held] == [0, 1]
    _each_ran_once([f for f in futures if f is not victim], marks, [0, 1, 2, 4, 5])
    assert pool.stats().failed == 1


class _ReleasedFuture:
    """Stands for a Dask future the pool's task list lets go of."""

    def release(self) -> None:
        pass


def test_a_job_killed_while_it_waits_to_go_again_is_not_sent() -> None:
    """ClusterTasks: a job given back (taken back from its worker) and then killed is forgotten
    when the dispatcher comes to send it again, without a task and without waiting.

    Pool.kill() can land between the moment the line hands the job out and the moment it is
    sent; they are checked under a lock, and must not take that lock twice.
    """
    import asyncio

    from jobpool._dask._inbox import Inbox
    from jobpool._dask._slots import WorkerSlots
    from jobpool._dask._tasks import ClusterTasks
    from jobpool._job import Call, Job, Outcomes

    loop = asyncio.new_event_loop()
    try:
        outcomes = Outcomes()
        tasks = ClusterTasks(None, outcomes, Inbox(loop))
        slots = WorkerSlots("tcp://127.0.0.1:1", 1)
        slots.quota = 1
        job = Job(Call(jobs.square, (3,), {}), None)
        assert outcomes.start(job)
        task = tasks.send(job, slots, "first", _ReleasedFuture)
        assert task is not None and tasks.task_of(job.future) is task
        tasks.drop(task, time.monotonic())  # taken back from its worker: held, no task
        assert tasks.kill(job.future) is True
        sent: list[Any] = []

        def send_again() -> None:
            sent.append(tasks.send(job, slots, "second", lambda: pytest.fail("submitted")))

        sender = threading.Thread(target=send_again, daemon=True)
        sender.start()
        sender.join(WAIT)
        assert not sender.is_alive(), "sending a killed job again never returned"
        assert sent == [None] and not slots.tasks and not tasks
        assert tasks.kill(job.future) is False  # forgotten: nothing holds it any more
        with pytest.raises(JobKilledError, match="before it started"):
            job.future.result(0)
    finally:
        loop.close()


def test_time_limit_of_a_job_waiting_on_a_worker_starts_in_its_slot(
    make_pool: MakePool, gate: jobs.StartGate
) -> None:
    pool = make_pool("dask", 1)
    _warm(pool)
    held = pool.submit(jobs.gate_job, gate.address, "a0", 0)
    gate.wait_for("a0")
    timed = pool.options(timeout=0.5).submit(jobs.square, 7)
    wait_until(lambda: _waiting(pool) == [timed], "the timed job to wait on the worker")
    done, _ = wait([timed], timeout=1.5)
    assert not done, "its clock ran while it waited for a slot"
    gate.release("a0")
    assert held.result(WAIT) == 0
    assert timed.result(WAIT) == 49


def _worker_of(pool: Pool, future: Future[Any]) -> Any:
    """The pool's record of the Dask worker that holds the job of ``future``."""
    dispatcher = _dispatcher(pool)
    return dispatcher.call(lambda: dispatcher.tasks.task_of(future).slots)


def test_jobs_waiting_behind_a_long_job_move_to_a_free_slot(
    make_pool: MakePool,
    gate: jobs.StartGate,
    marks: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = make_pool("dask", 2)
    _warm(pool)
    monkeypatch.setattr(_dask_slots, "RECALL_MIN_SECONDS", 3600.0)  # place them first
    long = pool.submit(jobs.gate_job, gate.address, "long", "long")
    gate.wait_for("long")
    short = [pool.submit(jobs.mark_run, marks, i, i) for i in range(20)]
    slots = _worker_of(pool, long)
    dispatcher = _dispatcher(pool)
    stuck = dispatcher.call(lambda: [t.job.future for t in slots.waiting()])
    assert stuck, "no job waits behind the long one: the test placed nothing there"
    free = [f for f in short if f not in stuck]
    done, _ = wait(free, timeout=WAIT)  # the other worker runs its own
    assert done == set(free)
    assert not any(f.done() for f in stuck)
    monkeypatch.setattr(_dask_slots, "RECALL_MIN_SECONDS", 0.02)
    dispatcher.call(lambda: None)  # a turn of its loop: it looks at the timers again
    done, _ = wait(stuck, timeout=WAIT)
    assert done == set(stuck), "jobs stayed behind the long job"
    _each_ran_once(short, marks, list(range(20)))
    assert not long.done()
    gate.release("long")
    assert long.result(WAIT) == "long"


@pytest.mark.slow  # a cluster of its own
def test_jobs_waiting_behind_a_crash_run_elsewhere_once(
    gate: jobs.StartGate, marks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's own cluster: the job that kills its worker fails, the ones behind it do not."""
    monkeypatch.setattr(_dask_slots, "RECALL_MIN_SECONDS", 3600.0)  # they stay behind it
    with Pool(2, backend="dask") as pool:
        try:
            _warm(pool)
            held = [pool.submit(jobs.gate_job, gate.address, f"a{i}", i) for i in range(2)]
            gate.wait_for("a0")
            gate.wait_for("a1")
            crash = pool.submit(jobs.gate_then_exit, gate.address, "crash")
            futures = [pool.submit(jobs.mark_run, marks, i, i) for i in range(8)]
            wait_until(lambda: len(_waiting(pool)) == 9, "the jobs to wait on the workers")
            gate.release("a0")
            gate.release("a1")
            gate.wait_for("crash")
            assert [f.result(WAIT) for f in held] == [0, 1]  # their ends reached the scheduler
            slots = _worker_of(pool, crash)
            behind = _dispatcher(pool).call(lambda: len(slots.waiting()))
            assert behind > 0, "no job waits behind the crash: the test placed nothing there"
            gate.release("crash")
            with pytest.raises(WorkerCrashedError, match="died while running this job"):
                crash.result(WAIT)
            _each_ran_once(futures, marks, list(range(8)))
            stats = pool.stats()
            assert (stats.failed, stats.worker_restarts) == (1, 1)
            assert pool.submit(jobs.square, 4).result(WAIT) == 16
        finally:
            gate.close()  # before the pool waits for its jobs


@pytest.mark.slow  # a cluster of its own
def test_workers_joining_and_leaving_share_the_slots(gate: jobs.StartGate, marks: str) -> None:
    """A cluster of in-process workers (threads), grown and shrunk under the pool."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
    )
    client = Client(cluster, set_as_default=False)
    try:
        with Pool(2, backend="dask", client=client) as pool:
            try:
                assert pool.stats().workers == 1
                first = pool.submit(jobs.gate_job, gate.address, "first", "first")
                gate.wait_for("first")
                second = pool.submit(jobs.gate_job, gate.address, "second", "second")
                cluster.scale(2)
                gate.wait_for("second")  # the new worker got the pool's missing slot
                assert pool.stats().workers == 2
                gate.release("first")
                gate.release("second")
                assert [first.result(WAIT), second.result(WAIT)] == ["first", "second"]
                _warm(pool)
                held = [pool.submit(jobs.gate_job, gate.address, f"a{i}", i) for i in range(2)]
                gate.wait_for("a0")
                gate.wait_for("a1")
                futures = [pool.submit(jobs.mark_run, marks, i, i) for i in range(6)]
                wait_until(lambda: len(_waiting(pool)) == 6, "the jobs to wait on the workers")
                leaving = _worker_of(pool, held[1])
                behind = _dispatcher(pool).call(lambda: len(leaving.waiting()))
                assert behind > 0, "no job waits on the worker that leaves"
                client.retire_workers([leaving.address])
                with pytest.raises(WorkerCrashedError, match="left the cluster"):
                    held[1].result(WAIT)
                assert pool.stats().workers == 1
                gate.release("a0")
                assert held[0].result(WAIT) == 0
                _each_ran_once(futures, marks, list(range(6)))
            finally:
                gate.close()  # "a1" still waits there, in a thread of the worker that left
    finally:
        client.close()
        cluster.close()


# --- a scheduler that dies mid-run, and a dispatcher that must not (issue 23, item 10) -----------


def _scheduler_address(scheduler_file: Any) -> Optional[str]:
    try:
        return str(json.loads(scheduler_file.read_text())["address"])
    except (OSError, ValueError, KeyError):  # not written yet, or half written
        return None


@contextmanager
def _cluster_by_hand(tmp_path: Any) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``dask scheduler`` and ``dask worker`` (1 process x 2 threads), as one starts them by
    hand, each in a session of its own; every process of both is gone when this ends."""
    env = dict(os.environ, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")
    env["PYTHONPATH"] = os.pathsep.join([TESTS_DIR, *filter(None, [env.get("PYTHONPATH")])])
    scheduler_file = tmp_path / "scheduler.json"
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"{name}.log", "wb") as log:
            command = [sys.executable, "-m", f"distributed.cli.dask_{name}", *args]
            started.append(
                subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
            )
        return started[-1]

    try:
        scheduler = start(
            "scheduler",
            *("--host", "127.0.0.1", "--port", "0", "--no-dashboard"),
            *("--scheduler-file", str(scheduler_file)),
        )
        wait_until(lambda: _scheduler_address(scheduler_file) is not None, "the scheduler")
        address = _scheduler_address(scheduler_file)
        assert address is not None
        start("worker", address, "--nworkers", "1", "--nthreads", "2", "--no-dashboard")
        with Client(address, set_as_default=False, timeout=WAIT) as client:
            client.wait_for_workers(1, timeout=WAIT)
        yield address, scheduler
    finally:
        for process in started:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the worker's nanny and its worker too
            except ProcessLookupError:
                pass
            process.wait(WAIT)
        sessions = [process.pid for process in started]
        wait_until(
            lambda: not any(_in_session(session) for session in sessions),
            "the cluster's processes to exit",
        )


def _shutdown_returns(pool: Pool) -> None:
    closing = threading.Thread(target=pool.shutdown)
    closing.start()
    closing.join(WAIT)
    assert not closing.is_alive(), "shutdown() did not return"


@pytest.mark.slow  # a cluster of its own
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_lost_scheduler_fails_every_job_and_breaks_the_pool(
    tmp_path: Any, gate: jobs.StartGate
) -> None:
    """kill -9 of the scheduler while jobs run on its worker, wait there and in the queue."""
    with _cluster_by_hand(tmp_path) as (address, scheduler):
        pool = Pool(2, backend="dask", address=address)
        try:
            _warm(pool)  # short jobs so far: jobs wait on the worker too, not only in the queue
            gated = [pool.submit(jobs.gate_job, gate.address, i, i) for i in range(6)]
            gate.wait_for(0)
            gate.wait_for(1)
            wait_until(lambda: len(_waiting(pool)) >= 1, "jobs to wait on the worker")
            large = b"x" * (_dask_slots.MAX_WAITING_JOB_BYTES + 1)  # waits for a free slot
            in_queue = [pool.submit(jobs.identity, large) for _ in range(2)]
            os.kill(scheduler.pid, signal.SIGKILL)
            _, not_done = wait(gated + in_queue, timeout=WAIT)
            assert not not_done, "jobs left hanging by the lost scheduler"
            for future in gated + in_queue:
                error = future.exception()
                assert isinstance(error, SchedulerLostError), repr(error)
                assert error.address == address
                assert f"lost the connection to the Dask scheduler at {address}" in str(error)
            for future in gated[:2]:  # running at the gate; the others wait on the worker or here
                assert "whether it ran is unknown" in str(future.exception())
            for future in in_queue:
                assert "whether it ran" not in str(future.exception())
            with pytest.raises(SchedulerLostError, match="the pool is broken"):
                pool.submit(jobs.square, 2)
        finally:
            gate.close()
            _shutdown_returns(pool)


@pytest.mark.slow  # a cluster of its own
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_scheduler_lost_while_the_pool_is_idle_fails_the_next_job(tmp_path: Any) -> None:
    with _cluster_by_hand(tmp_path) as (address, scheduler):
        pool = Pool(2, backend="dask", address=address)
        try:
            assert pool.submit(jobs.square, 3).result(WAIT) == 9
            client: Any = pool._backend._client  # type: ignore[attr-defined]
            os.kill(scheduler.pid, signal.SIGKILL)
            wait_until(lambda: client.status != "running", "the client to lose its scheduler")
            future = pool.submit(jobs.square, 4)  # accepted: nobody has looked yet
            error = future.exception(WAIT)
            assert isinstance(error, SchedulerLostError), repr(error)
            assert f"lost the connection to the Dask scheduler at {address}" in str(error)
            with pytest.raises(SchedulerLostError):
                pool.submit(jobs.square, 5)
        finally:
            _shutdown_returns(pool)


def test_a_client_closed_under_the_pool_fails_its_jobs_and_breaks_it(
    cluster_address: str, gate: jobs.StartGate
) -> None:
    client = new_client(cluster_address)
    pool = Pool(1, backend="dask", client=client)
    try:
        held = pool.submit(jobs.gate_job, gate.address, "held", "held")
        gate.wait_for("held")
        queued = pool.submit(jobs.square, 2)
        client.close()
        for future in (held, queued):
            error = future.exception(WAIT)
            assert isinstance(error, SchedulerLostError), repr(error)
            assert "the pool's Dask client (for the scheduler at" in str(error)
            assert "was closed" in str(error)
        with pytest.raises(SchedulerLostError, match="was closed"):
            pool.submit(jobs.square, 3)
    finally:
        gate.close()
        _shutdown_returns(pool)


def test_the_dispatcher_survives_a_client_that_raises_when_asked(
    cluster_address: str, gate: jobs.StartGate
) -> None:
    """What killed the dispatcher of a pool whose scheduler was lost: the client's
    ``nthreads()`` raising AttributeError at once instead of returning something to await."""
    asked = threading.Semaphore(0)

    def nthreads(*args: Any, **kwargs: Any) -> Any:
        asked.release()
        raise AttributeError("'NoneType' object has no attribute 'ncores'")

    client = new_client(cluster_address)
    with client, Pool(2, backend="dask", client=client) as pool:
        client.nthreads = nthreads  # asked once a second while a job runs
        held = pool.submit(jobs.gate_job, gate.address, "held", "held")
        gate.wait_for("held")
        for _ in range(2):
            assert asked.acquire(timeout=WAIT), "the pool never asked which workers there are"
        gate.release("held")
        assert held.result(WAIT) == "held"
        assert pool.submit(jobs.square, 4).result(WAIT) == 16


@pytest.mark.logs_errors  # the dispatcher's death is logged, on purpose
def test_a_dispatcher_that_dies_fails_every_job_and_call_at_once(
    make_pool: MakePool, gate: jobs.StartGate
) -> None:
    pool = make_pool("dask", 1)
    _warm(pool)
    running = pool.submit(jobs.gate_job, gate.address, "running", 0)
    gate.wait_for("running")
    on_worker = [pool.submit(jobs.square, i) for i in range(3)]
    large = b"x" * (_dask_slots.MAX_WAITING_JOB_BYTES + 1)  # waits in the pool's queue
    in_queue = [pool.submit(jobs.identity, large) for _ in range(2)]
    wait_until(lambda: len(_waiting(pool)) >= 1, "jobs to wait on the worker")
    dispatcher = _dispatcher(pool)
    bug = RuntimeError("a bug in the dispatcher")

    def check_if_due(now: float) -> None:
        raise bug

    # Runs in the dispatcher thread, which calls check_if_due later in that same turn.
    dispatcher.call(lambda: setattr(dispatcher.workers, "check_if_due", check_if_due))
    futures = [running, *on_worker, *in_queue]
    _, not_done = wait(futures, timeout=WAIT)
    assert not not_done, "jobs left hanging by the dead dispatcher"
    for future in futures:
        error = future.exception()
        assert isinstance(error, InitializerError) and error.__cause__ is bug, repr(error)
    with pytest.raises(InitializerError, match="dispatcher failed"):
        dispatcher.call(lambda: None, timeout=WAIT)  # at once, not after the timeout
    with pytest.raises(InitializerError, match="dispatcher failed"):
        pool.submit(jobs.square, 1)
    gate.close()


# --- scripts as people write them: no __main__ guard, stdin, -c (issue 13) ---------------------

SCRIPT = """
import os
import time

print("TOP LEVEL", os.getpid(), flush=True)  # must print once: workers never run the script

from jobpool import Pool, WorkerCrashedError


class MyError(Exception):
    pass


def square(x):
    return x * x


def fail(x):
    raise MyError(f"bad {x}")


def pids(pool):
    return set(pool.map(lambda _: os.getpid(), range(20), chunksize=1))


pool = Pool(2, backend="dask")
print("RESULTS", list(pool.map(square, range(6))), flush=True)
try:
    pool.submit(fail, 3).result()
except MyError as exc:  # the script's own class, raised in a worker
    print("CAUGHT", exc, flush=True)
before = pids(pool)
try:
    pool.submit(os._exit, 3).result()
except WorkerCrashedError:
    print("CRASHED", flush=True)
deadline = time.monotonic() + 60
while not pids(pool) - before:  # until the worker the nanny restarted runs jobs
    assert time.monotonic() < deadline, "no restarted worker"
print("RESTARTED", flush=True)
for pid in sorted(before | pids(pool)):
    print("WORKER", pid, flush=True)
pool.shutdown()
"""


def _in_session(session: int) -> set[int]:
    """The processes (not zombies) whose session is ``session``."""
    members = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X") and int(fields[3]) == session:
            members.add(int(entry))
    return members


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["file", "stdin", "-c"])
def test_own_cluster_runs_guardless_scripts_from_a_file_stdin_and_c(
    how: str, tmp_path: Any
) -> None:
    """The pool's own LocalCluster never runs the script in its workers, restarted ones too."""
    script = tmp_path / "guardless.py"
    script.write_text(SCRIPT)
    command = {
        "file": [sys.executable, str(script)],
        "stdin": [sys.executable, "-"],
        "-c": [sys.executable, "-c", SCRIPT],
    }[how]
    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        text=True,
        start_new_session=True,  # its workers are in its session: none may outlive it
    )
    try:
        out, err = child.communicate(SCRIPT if how == "stdin" else "", timeout=180)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, 9)
            child.wait()
    assert child.returncode == 0, err[-3000:]
    lines = out.splitlines()
    assert len([line for line in lines if line.startswith("TOP LEVEL")]) == 1, out
    assert "RESULTS [0, 1, 4, 9, 16, 25]" in lines
    assert "CAUGHT bad 3" in lines
    assert "CRASHED" in lines and "RESTARTED" in lines
    workers = {int(line.split()[1]) for line in lines if line.startswith("WORKER")}
    assert len(workers) >= 3  # two at the start, one restarted after the crash
    wait_until(lambda: not _in_session(child.pid), "the script's processes to exit")


# --- the extra is missing -------------------------------------------------------------------------


def test_missing_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ImportError, match=r'pip install "jobpool\[dask\]"'):
        Pool(backend="dask")
