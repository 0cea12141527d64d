"""Fault injection: one table of (injector, expected error) rows, run on the process backend.

Every scenario runs the faulty job on one worker while a *bystander* job holds the other worker
and *followers* wait in the queue. Afterwards every future must have resolved exactly once with
the right outcome, only the faulty job may have failed, the pool must still answer a new job, and
(checked by the autouse fixture in conftest) no process of the pool may be left behind.

Synchronization is by ``jobs.StartGate`` (jobs report that they started, with their pid, and
wait to be released) and by futures, with generous ceilings; nothing waits on a sleep guess.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any, Callable

import pytest

import jobs
from conftest import BACKENDS, PROCESS, WAIT, join_or_fail
from jobpool import (
    InitializerError,
    JobKilledError,
    JobTimeoutError,
    Pool,
    RemoteError,
    SerializationError,
    WorkerCrashedError,
)
from jobs import StartGate


class Resolutions:
    """Counts how often each future resolves; every one must resolve exactly once."""

    def __init__(self) -> None:
        self._called = threading.Condition()
        self.calls: dict[int, int] = {}
        self.futures: list[Future[Any]] = []

    def track(self, future: Future[Any]) -> Future[Any]:
        self.futures.append(future)
        self.calls.setdefault(id(future), 0)

        def done(f: Future[Any]) -> None:
            with self._called:
                self.calls[id(f)] += 1
                self._called.notify_all()

        future.add_done_callback(done)
        return future

    def check_all_once(self) -> None:
        # A future is done before its callbacks run (set_result marks it, then calls them):
        # wait for the callbacks themselves, not for done().
        with self._called:
            all_called = self._called.wait_for(
                lambda: all(self.calls[id(f)] for f in self.futures), timeout=WAIT
            )
            calls = [self.calls[id(f)] for f in self.futures]
        assert all_called, f"{calls.count(0)} futures never resolved"
        assert all(count == 1 for count in calls), sorted(calls)


# --- the fault table ---------------------------------------------------------------------------

Injector = Callable[[Pool, StartGate], "Future[Any]"]


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Injector  # submits the faulty job and makes the fault happen
    error: type[BaseException]
    check: Callable[[BaseException], bool]  # what the error must say besides its type
    replaced: bool = True  # its worker dies: exactly one replacement is started
    timed_out: bool = False


def _external_sigkill(pool: Pool, gate: StartGate) -> Future[Any]:
    future = pool.submit(jobs.gate_job, gate.address, "victim")
    os.kill(gate.wait_for("victim"), signal.SIGKILL)
    return future


def _pool_kill(pool: Pool, gate: StartGate) -> Future[Any]:
    future = pool.submit(jobs.gate_job, gate.address, "victim")
    gate.wait_for("victim")
    assert pool.kill(future) is True
    assert future.done()  # kill() returns once the future has failed, on every backend
    return future


def _crash_kind(signal_name: str | None, exitcode: int | None = None) -> Callable[..., bool]:
    def check(exc: BaseException) -> bool:
        assert isinstance(exc, WorkerCrashedError)
        assert exc.signal == signal_name, exc
        if exitcode is not None:
            assert exc.exitcode == exitcode, exc
        return True

    return check


FAULTS = [
    Fault(
        "os._exit",
        lambda pool, gate: pool.submit(jobs.exit_now, 7),
        WorkerCrashedError,
        _crash_kind(None, 7),
    ),
    Fault(
        "segfault",
        lambda pool, gate: pool.submit(jobs.segfault),
        WorkerCrashedError,
        _crash_kind("SIGSEGV"),
    ),
    Fault(
        "sigkill-self",
        lambda pool, gate: pool.submit(jobs.kill_self),
        WorkerCrashedError,
        _crash_kind("SIGKILL"),
    ),
    Fault("sigkill-from-test", _external_sigkill, WorkerCrashedError, _crash_kind("SIGKILL")),
    Fault(
        "pool.kill",
        _pool_kill,
        JobKilledError,
        lambda exc: "killed by Pool.kill(); its worker was replaced" in str(exc),
    ),
    Fault(
        "hang-past-timeout",
        lambda pool, gate: pool.options(timeout=0.5).submit(jobs.sleep_for, 120),
        JobTimeoutError,
        lambda exc: exc.timeout == 0.5,  # type: ignore[attr-defined]
        timed_out=True,
    ),
    Fault(
        "raise",
        lambda pool, gate: pool.submit(jobs.raise_value_error, "boom"),
        ValueError,
        lambda exc: str(exc) == "boom",
        replaced=False,
    ),
    Fault(
        "unpicklable-exception",
        lambda pool, gate: pool.submit(jobs.raise_unpicklable_error),
        RemoteError,
        lambda exc: "UnpicklableError" in str(exc),
        replaced=False,
    ),
    Fault(
        "unpicklable-result",
        lambda pool, gate: pool.submit(jobs.return_lock),
        SerializationError,
        lambda exc: "the job's result" in str(exc) and "_thread.lock" in str(exc),
        replaced=False,
    ),
]
# The start method matters most for how a worker starts and dies: spawn runs a subset.
SPAWN_FAULTS = {"os._exit", "sigkill-from-test", "hang-past-timeout"}

FAULT_CASES = [
    pytest.param(backend, fault, id=f"{backend}-{fault.name}")
    for backend in PROCESS
    for fault in FAULTS
] + [
    pytest.param("process-spawn", fault, id=f"process-spawn-{fault.name}", marks=[pytest.mark.slow])
    for fault in FAULTS
    if fault.name in SPAWN_FAULTS
]


@pytest.mark.parametrize(("backend", "fault"), FAULT_CASES)
def test_fault(make_pool: Callable[..., Pool], backend: str, fault: Fault) -> None:
    pool = make_pool(backend, workers=2)
    seen = Resolutions()
    with StartGate() as gate:
        bystander = seen.track(pool.submit(jobs.gate_job, gate.address, "bystander", "intact"))
        gate.wait_for("bystander")  # holds one worker for the whole scenario
        faulty = seen.track(fault.inject(pool, gate))
        followers = [seen.track(pool.submit(jobs.square, i)) for i in range(6)]

        exc = faulty.exception(timeout=WAIT)
        assert isinstance(exc, fault.error), repr(exc)
        assert fault.check(exc)
        # The queued jobs run on the fault's worker (or its replacement) while the bystander
        # still holds the other worker: a fault costs only its own job.
        assert [f.result(timeout=WAIT) for f in followers] == [i * i for i in range(6)]
        assert not bystander.done()
        gate.release("bystander")
        assert bystander.result(timeout=WAIT) == "intact"

    assert seen.track(pool.submit(jobs.square, 12)).result(timeout=WAIT) == 144
    pool.shutdown(wait=True)
    seen.check_all_once()
    stats = pool.stats()
    assert (stats.submitted, stats.pending, stats.running) == (9, 0, 0)
    assert (stats.done, stats.failed, stats.cancelled) == (8, 1, 0)
    assert stats.timed_out == int(fault.timed_out)
    assert stats.worker_restarts == int(fault.replaced)
    assert stats.workers == 0


# --- SIGKILL at random moments, random cancels, recycling --------------------------------------


@pytest.mark.parametrize("backend", PROCESS)
def test_sigkill_workers_at_random_moments(make_pool: Callable[..., Pool], backend: str) -> None:
    """Kill workers while jobs run, at moments the test does not control; nothing else breaks."""
    rng = random.Random(20240611)
    pool = make_pool(backend, workers=2)
    seen = Resolutions()
    n = 30
    with StartGate() as gate:
        futures = [
            seen.track(pool.submit(jobs.gate_then_sleep, gate.address, i, rng.uniform(0, 0.03)))
            for i in range(n)
        ]
        killed: set[int] = set()
        deadline = time.monotonic() + WAIT
        while not all(f.done() for f in futures):
            assert time.monotonic() < deadline, "jobs did not finish"
            try:
                _, pid = gate.wait(timeout=0.2)  # a job started: maybe kill its worker
            except AssertionError:
                continue  # the kills may have hit jobs before they reached the gate
            if pid not in killed and rng.random() < 0.3:
                time.sleep(rng.uniform(0, 0.03))  # a random moment, not a synchronization
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
    seen.check_all_once()
    crashed = 0
    for i, future in enumerate(futures):
        exc = future.exception()
        if exc is None:
            assert future.result() == i
        else:
            assert isinstance(exc, WorkerCrashedError), repr(exc)
            assert exc.signal == "SIGKILL" and exc.pid in killed, exc
            crashed += 1
    assert killed and crashed <= len(killed)
    assert pool.submit(jobs.square, 5).result(timeout=WAIT) == 25
    pool.shutdown(wait=True)
    stats = pool.stats()
    assert (stats.failed, stats.done) == (crashed, n - crashed + 1)
    assert stats.worker_restarts == len(killed)


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_cancels(make_pool: Callable[..., Pool], backend: str, tmp_path: Any) -> None:
    """A job cancelled in time never runs; every other job runs exactly once."""
    rng = random.Random(99)
    pool = make_pool(backend, workers=2)
    seen = Resolutions()
    with StartGate() as gate:
        # Hold both workers so that the cancels below race only with each other, then let go.
        holders = [seen.track(pool.submit(jobs.gate_job, gate.address, f"h{i}")) for i in (0, 1)]
        gate.wait_for("h0")
        gate.wait_for("h1")
        futures = [seen.track(pool.submit(jobs.mark_run, str(tmp_path), i, i)) for i in range(40)]
        cancelled = {i for i, f in enumerate(futures) if rng.random() < 0.3 and f.cancel()}
        assert cancelled  # all 40 wait behind the holders: every cancel attempt succeeds
        gate.release_all()
        # Cancels racing with running jobs: some succeed, some come too late.
        cancelled |= {i for i, f in enumerate(futures) if rng.random() < 0.2 and f.cancel()}
        wait(futures, timeout=WAIT)
    pool.shutdown(wait=True)
    seen.check_all_once()
    for i, future in enumerate(futures):
        assert future.cancelled() == (i in cancelled)
        if i not in cancelled:
            assert future.result() == i
    assert set(jobs.runs_in(str(tmp_path))) == {str(i) for i in range(40)} - {
        str(i) for i in cancelled
    }
    stats = pool.stats()
    assert stats.cancelled == len(cancelled)
    assert stats.done == 42 - len(cancelled)
    assert holders[0].result() is None


@pytest.mark.parametrize("backend", [*PROCESS, "process-spawn"])
def test_recycling_drops_and_duplicates_nothing(
    make_pool: Callable[..., Pool], backend: str, tmp_path: Any
) -> None:
    n = 12
    pool = make_pool(backend, workers=2, max_jobs_per_worker=1)
    seen = Resolutions()
    futures = [seen.track(pool.submit(jobs.mark_run, str(tmp_path), i, i)) for i in range(n)]
    # Shut down at once: recycling must go on while the queue still holds jobs.
    pool.shutdown(wait=True)
    seen.check_all_once()
    assert [f.result() for f in futures] == list(range(n))
    runs = jobs.runs_in(str(tmp_path))
    assert set(runs) == {str(i) for i in range(n)}
    assert len(set(runs.values())) == n  # one job per worker: n distinct processes
    stats = pool.stats()
    assert stats.done == n
    # Every worker but the first two is a replacement (the last recycles need none).
    assert n - 2 <= stats.worker_restarts <= n


@pytest.mark.parametrize("backend", PROCESS)
def test_recycling_with_timeouts_and_crashes(make_pool: Callable[..., Pool], backend: str) -> None:
    """Recycling, a crash and a timeout on the same workers: the pool keeps its size."""
    pool = make_pool(backend, workers=2, max_jobs_per_worker=2)
    seen = Resolutions()
    crash = seen.track(pool.submit(jobs.exit_now, 4))
    hang = seen.track(pool.options(timeout=0.3).submit(jobs.sleep_for, 120))
    results = [seen.track(pool.submit(jobs.pid_and_value, i)) for i in range(10)]
    assert isinstance(crash.exception(timeout=WAIT), WorkerCrashedError)
    assert isinstance(hang.exception(timeout=WAIT), JobTimeoutError)
    assert [f.result(timeout=WAIT)[1] for f in results] == list(range(10))
    pids = [f.result()[0] for f in results]
    assert max(pids.count(pid) for pid in pids) <= 2
    assert pool.stats().workers == 2  # retiring and killed workers no longer count
    pool.shutdown(wait=True)
    seen.check_all_once()


# --- initializers -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [*PROCESS, "process-spawn"])
@pytest.mark.parametrize(
    ("initializer", "cause"),
    [(jobs.fail_initializer, RuntimeError), (jobs.exit_in_initializer, None)],
    ids=["raises", "exits"],
)
def test_failing_initializer_breaks_the_pool(
    make_pool: Callable[..., Pool], backend: str, initializer: Any, cause: Any
) -> None:
    pool = make_pool(backend, workers=2, initializer=initializer)
    try:
        future = pool.submit(jobs.square, 3)
    except InitializerError:  # the pool broke already
        pass
    else:
        exc = future.exception(timeout=WAIT)
        assert isinstance(exc, InitializerError), repr(exc)
        if cause is not None:
            assert isinstance(exc.__cause__, cause)
    # Once a future failed this way the pool is broken for good, and says so at submit.
    with pytest.raises(InitializerError):
        pool.submit(jobs.square, 4)
    pool.shutdown(wait=True)
    # No endless restart loop: at most a couple of retries for workers dying while starting.
    assert pool.stats().worker_restarts < 3
    assert pool.stats().workers == 0


def test_failing_initializer_on_threads(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool("thread", workers=2, initializer=jobs.fail_initializer)
    try:
        future = pool.submit(jobs.square, 3)
    except InitializerError:
        pass
    else:
        assert isinstance(future.exception(timeout=WAIT), InitializerError)
    with pytest.raises(InitializerError):
        pool.submit(jobs.square, 4)


# --- timeouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [*BACKENDS, "process-spawn"])
def test_queue_wait_does_not_count_against_the_timeout(
    make_pool: Callable[..., Pool], backend: str
) -> None:
    pool = make_pool(backend, workers=1)
    blocker = pool.submit(jobs.sleep_for, 1.0)  # a busy job, longer than the limit below
    queued = pool.options(timeout=0.5).submit(jobs.square, 3)
    assert queued.result(timeout=WAIT) == 9  # it waited ~1 s in the queue, then ran at once
    assert blocker.result(timeout=WAIT) == 1.0
    assert pool.stats().timed_out == 0


@pytest.mark.parametrize("backend", PROCESS)
def test_pool_job_timeout_replaces_the_worker_and_the_rest_carry_on(
    make_pool: Callable[..., Pool], backend: str
) -> None:
    pool = make_pool(backend, workers=2, job_timeout=0.5)
    seen = Resolutions()
    hangs = [seen.track(pool.submit(jobs.sleep_for, 120)) for _ in range(2)]
    quick = [seen.track(pool.submit(jobs.get_pid, i)) for i in range(8)]
    for hang in hangs:
        exc = hang.exception(timeout=WAIT)
        assert isinstance(exc, JobTimeoutError) and isinstance(exc, TimeoutError)
    pids = {f.result(timeout=WAIT) for f in quick}
    pool.shutdown(wait=True)
    seen.check_all_once()
    stats = pool.stats()
    assert (stats.timed_out, stats.failed, stats.done) == (2, 2, 8)
    assert stats.worker_restarts == 2
    assert len(pids) <= 2  # the quick jobs ran on the two replacements only


def test_thread_timeout_fails_on_time_while_the_thread_runs_on(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool("thread", workers=1)
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def hang() -> str:
        started.set()
        try:
            release.wait(WAIT)
            return "late"
        finally:
            finished.set()

    t0 = time.monotonic()
    future = pool.options(timeout=0.3).submit(hang)
    exc = future.exception(timeout=WAIT)
    elapsed = time.monotonic() - t0
    assert isinstance(exc, JobTimeoutError) and exc.timeout == 0.3
    assert 0.3 <= elapsed < 0.3 + 5  # on time (generous ceiling), not when the call returns
    assert started.is_set() and not finished.is_set()  # the thread runs on, abandoned
    # A fresh thread serves the queue meanwhile.
    assert pool.submit(jobs.square, 4).result(timeout=WAIT) == 16
    release.set()
    assert finished.wait(WAIT)
    # The late result does not overwrite the timeout.
    assert future.exception() is exc
    pool.shutdown(wait=True)
    stats = pool.stats()
    assert (stats.done, stats.failed, stats.timed_out, stats.worker_restarts) == (1, 1, 1, 1)


@pytest.mark.parametrize("wait", [False, True])
def test_thread_time_limits_hold_through_shutdown(
    make_pool: Callable[..., Pool], wait: bool
) -> None:
    """Found by the fault campaign: ``shutdown(wait=False)`` stopped the timer of time limits,
    so a job that hung past its limit (running, or queued behind one) never failed; and
    ``shutdown(wait=True)`` waited for a thread abandoned while it waited, and did not replace
    it, so the job queued behind never ran and its future never resolved."""
    pool = make_pool("thread", workers=1)
    release = threading.Event()

    def hang() -> str:
        release.wait(WAIT)
        return "late"

    limited = pool.options(timeout=0.2)
    running = limited.submit(hang)
    queued_hang = limited.submit(hang)
    queued = pool.submit(jobs.square, 3)
    closer = threading.Thread(target=pool.shutdown, kwargs={"wait": wait}, name="closer")
    closer.start()
    try:
        for future in (running, queued_hang):
            exc = future.exception(timeout=WAIT)
            assert isinstance(exc, JobTimeoutError), repr(exc)
        assert queued.result(timeout=WAIT) == 9
        # shutdown returned although both hung calls still run: it does not wait for them.
        join_or_fail(closer)
        assert not release.is_set()
    finally:
        release.set()
        closer.join(WAIT)
    pool.shutdown(wait=True)
    stats = pool.stats()
    assert (stats.done, stats.timed_out, stats.worker_restarts, stats.workers) == (1, 2, 2, 0)


def test_thread_kill_fails_the_future_at_once(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool("thread", workers=1)
    started, release = threading.Event(), threading.Event()

    def hang() -> str:
        started.set()
        release.wait(WAIT)
        return "late"

    future = pool.submit(hang)
    queued = pool.submit(jobs.square, 2)
    assert started.wait(WAIT)
    assert pool.kill(future) is True
    assert isinstance(future.exception(timeout=0), JobKilledError)
    assert queued.result(timeout=WAIT) == 4
    assert pool.kill(queued) is False  # already done
    release.set()
    pool.shutdown(wait=True)
    assert isinstance(future.exception(), JobKilledError)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, 0.0, -0.5, math.nan])
def test_bad_timeouts_name_the_argument(value: float) -> None:
    with pytest.raises(ValueError, match="job_timeout"):
        Pool(1, job_timeout=value)
    with Pool(1) as pool, pytest.raises(ValueError, match="timeout"):
        pool.options(timeout=value)


@pytest.mark.parametrize("value", [0, -3])
def test_bad_max_jobs_per_worker_names_the_argument(value: int) -> None:
    with pytest.raises(ValueError, match="max_jobs_per_worker"):
        Pool(1, backend="process", max_jobs_per_worker=value)


def test_max_jobs_per_worker_is_refused_on_threads() -> None:
    with pytest.raises(ValueError, match="max_jobs_per_worker"):
        Pool(1, backend="thread", max_jobs_per_worker=2)


# --- logging and stats -------------------------------------------------------------------------


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("backend", [*PROCESS, "process-spawn"])
def test_worker_log_records_reach_the_parent(make_pool: Callable[..., Pool], backend: str) -> None:
    handler = ListHandler()
    logger = logging.getLogger("jobpool.tests")
    logger.addHandler(handler)
    try:
        pool = make_pool(backend, workers=2)
        futures = [pool.submit(jobs.log_message, f"hello {i}") for i in range(6)]
        # A worker sends its records before its result, on the same pipe: once the futures
        # resolved, every record has been handled.
        pids = [f.result(timeout=WAIT) for f in futures]
    finally:
        logger.removeHandler(handler)
    by_message = {r.getMessage(): r for r in handler.records}
    assert set(by_message) == {f"hello {i}" for i in range(6)}
    for i, pid in enumerate(pids):
        record = by_message[f"hello {i}"]
        assert record.process == pid and pid != os.getpid()
        assert isinstance(record.jobpool_worker, int)  # type: ignore[attr-defined]
        assert record.processName == f"jobpool-worker-{record.jobpool_worker}"  # type: ignore[attr-defined]
        assert record.levelno == logging.WARNING


@pytest.mark.parametrize("backend", [*PROCESS, "process-spawn"])
@pytest.mark.parametrize("level", [logging.DEBUG, logging.WARNING])
def test_workers_log_at_the_level_the_parent_had_when_the_pool_was_made(
    make_pool: Callable[..., Pool], backend: str, level: int
) -> None:
    handler = ListHandler()
    logger = logging.getLogger("jobpool.tests")
    logger.addHandler(handler)
    root = logging.getLogger()
    before = root.level
    try:
        root.setLevel(level)
        pool = make_pool(backend, workers=1)
        root.setLevel(logging.DEBUG)  # from now on the parent would pass on whatever came
        for sent in (logging.DEBUG, logging.INFO, logging.WARNING):
            pool.submit(jobs.log_at, sent, f"at {sent}").result(timeout=WAIT)
    finally:
        root.setLevel(before)
        logger.removeHandler(handler)
    # Records come before their job's result, on the same pipe: all of them are in.
    assert [r.levelno for r in handler.records] == [
        sent for sent in (logging.DEBUG, logging.INFO, logging.WARNING) if sent >= level
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_stats_count_every_outcome(make_pool: Callable[..., Pool], backend: str) -> None:
    pool = make_pool(backend, workers=1)
    with StartGate() as gate:
        blocker = pool.submit(jobs.gate_job, gate.address, "blocker", "b")
        gate.wait_for("blocker")
        ok = [pool.submit(jobs.square, i) for i in range(3)]
        raised = pool.submit(jobs.raise_value_error, "x")
        timed = pool.options(timeout=0.3).submit(jobs.sleep_for, 120 if "process" in backend else 2)
        dropped = pool.submit(jobs.square, 9)
        assert dropped.cancel()
        stats = pool.stats()
        assert (stats.submitted, stats.running) == (7, 1)
        assert stats.pending == 6  # counted until the worker takes (or skips) them
        gate.release("blocker")
        wait([blocker, *ok, raised, timed], timeout=WAIT)
    pool.shutdown(wait=True)
    assert blocker.result() == "b"
    stats = pool.stats()
    assert (stats.submitted, stats.pending, stats.running) == (7, 0, 0)
    assert (stats.done, stats.failed, stats.cancelled, stats.timed_out) == (4, 2, 1, 1)
    assert stats.worker_restarts == 1  # the timed-out worker (or abandoned thread) was replaced
    assert stats.workers == 0
