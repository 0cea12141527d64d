"""How worker processes come up: as the waiting jobs need them, from a warm fork server.

``Pool(workers=50)`` is a ceiling, not 50 processes at the first job: under forkserver and spawn
a worker starts when a job waits that no idle or starting worker will take (``_workers.grow``),
so three jobs start three workers and ``stats().workers`` says so. Under fork every worker starts
with the first job, while the submitter waits (a fork must not copy the caller mid-operation).
The fork server imports what a worker needs once (``_fork_server``'s preload), and each worker
forked from it starts from that clean state, whatever an earlier worker's jobs changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import jobpool
import jobs
from conftest import PROCESS_BACKENDS, START_METHODS, WAIT, MakePool, join_or_fail
from jobpool._process import _workers
from jobs import StartGate

TESTS = Path(__file__).resolve().parent
SOURCE = Path(jobpool.__file__).resolve().parent.parent  # the jobpool this test runs
GROWING = [m for m in START_METHODS if m != "fork"]


@pytest.mark.parametrize("method", GROWING)
def test_a_big_pool_starts_only_the_workers_its_jobs_use(
    make_pool: MakePool, gate: StartGate, method: str
) -> None:
    pool = make_pool(f"process-{method}", workers=50)
    assert pool.stats().workers == 0  # nothing started before the first job
    running = [pool.submit(jobs.gate_job, gate.address, i, i) for i in range(3)]
    pids = {gate.wait_for(i) for i in range(3)}  # all three run at once: three workers
    assert len(pids) == 3
    assert pool.stats().workers == 3
    for i in range(3):
        gate.release(i)
    assert [f.result(WAIT) for f in running] == [0, 1, 2]
    assert [pool.submit(abs, -i).result(WAIT) for i in range(20)] == list(range(20))
    stats = pool.stats()
    assert stats.workers == 3 and stats.worker_restarts == 0


@pytest.mark.parametrize("method", GROWING)
def test_a_job_queued_behind_busy_workers_starts_another(
    make_pool: MakePool, gate: StartGate, method: str
) -> None:
    """Every started worker is busy and a job is queued: the pool grows at once, without
    waiting for a reply to wake it."""
    pool = make_pool(f"process-{method}", workers=4)
    first = pool.submit(jobs.gate_job, gate.address, "first", 1)
    gate.wait_for("first")
    assert pool.stats().workers == 1
    second = pool.submit(jobs.gate_job, gate.address, "second", 2)
    gate.wait_for("second")  # while the first still holds its worker
    assert pool.stats().workers == 2
    gate.release("first")
    gate.release("second")
    assert (first.result(WAIT), second.result(WAIT)) == (1, 2)


@pytest.mark.parametrize("method", GROWING)
def test_the_pool_grows_to_its_size_for_long_jobs(
    make_pool: MakePool, gate: StartGate, method: str
) -> None:
    workers = 6
    pool = make_pool(f"process-{method}", workers=workers)
    held = [pool.submit(jobs.gate_job, gate.address, i, i) for i in range(workers + 2)]
    assert len({gate.wait_for(i) for i in range(workers)}) == workers  # all at once
    assert pool.stats().workers == workers  # and no more, though two more jobs wait
    for i in range(workers + 2):
        gate.release(i)
    assert [f.result(WAIT) for f in held] == list(range(workers + 2))
    assert pool.stats().workers == workers


INF = float("inf")


def test_jobs_queued_behind_first_jobs_as_long_as_a_start_get_workers_at_once() -> None:
    """How long the waiting jobs would wait for the busy workers (``seconds_to_serve``), by
    the (average, running for) of each busy worker's job.

    Forty-nine workers on their first jobs, the oldest running for 0.2 s, none replied yet:
    the fiftieth job would wait about that long, not 0.2 s / 49 (which, shorter than a start,
    once held ``Pool(50)`` back from its last worker until the jobs had run much longer)."""
    first_jobs = [(INF, 0.2 - i * 0.004) for i in range(49)]
    assert _workers.seconds_to_serve(1, first_jobs) == pytest.approx(0.2)
    # Jobs of a known 100 us, just started: 298 more take the two workers 298 * 100 us / 2.
    tiny = [(1e-4, 0.0), (1e-4, 0.0)]
    assert _workers.seconds_to_serve(298, tiny) == pytest.approx(298 * 1e-4 / 2)
    # One job behind four workers whose 10 ms jobs have 5 ms left: 5 ms, though at their
    # rate the four take one job in 10 ms / 4; three jobs behind them: 3 * 10 ms / 4.
    halfway = [(0.01, 0.005)] * 4
    assert _workers.seconds_to_serve(1, halfway) == pytest.approx(0.005)
    assert _workers.seconds_to_serve(3, halfway) == pytest.approx(0.0075)
    # Two behind workers with 1, 6, 9 and 9 ms left: the second to be free is free in 6 ms.
    thirds = [(0.01, 0.009), (0.01, 0.004), (0.01, 0.001), (0.01, 0.001)]
    assert _workers.seconds_to_serve(2, thirds) == pytest.approx(0.006)
    # A job that has run past its worker's average is taken to be as long as the longest.
    assert _workers.seconds_to_serve(1, [(0.001, 0.3), (0.001, 0.3)]) == pytest.approx(0.3)
    assert _workers.seconds_to_serve(3, []) == INF


@pytest.mark.skipif("fork" not in START_METHODS, reason="no fork start method here")
def test_under_fork_every_worker_starts_with_the_first_job(make_pool: MakePool) -> None:
    pool = make_pool("process-fork", workers=3)
    assert pool.submit(abs, -1).result(WAIT) == 1
    assert pool.stats().workers == 3


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_fresh_worker_starts_clean(make_pool: MakePool, backend: str) -> None:
    """What a job changes in its worker (a module of the test, a module the fork server
    preloads) is not seen by the worker that replaces it."""
    pool = make_pool(backend, workers=1, max_jobs_per_worker=1)
    first = pool.submit(jobs.mark_module, "cloudpickle", "changed")
    first.result(WAIT)
    pool.submit(jobs.set_state, "changed").result(WAIT)
    assert pool.submit(jobs.module_mark, "cloudpickle").result(WAIT) is None
    assert pool.submit(jobs.get_state).result(WAIT) is None
    assert pool.stats().worker_restarts >= 3


PRELOAD_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import jobs
from jobpool import Pool

if __name__ == "__main__":
    with Pool(2, backend="process", start_method="forkserver") as pool:
        # A job sent by reference: nothing in it needs cloudpickle, so only the fork server
        # can have imported it.
        loaded = pool.submit(jobs.modules_loaded, ["jobpool._process._in_worker", "cloudpickle"])
        print(loaded.result(60))
"""


@pytest.mark.skipif("forkserver" not in START_METHODS, reason="no fork server here")
def test_the_fork_server_preloads_what_a_worker_needs(tmp_path: Path) -> None:
    script = tmp_path / "preload.py"  # a fresh interpreter: its own, new fork server
    script.write_text(textwrap.dedent(PRELOAD_SCRIPT.format(tests=str(TESTS))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[True, True]", done.stderr


FREEZE_SCRIPT = """
import gc
from jobpool import Pool

if __name__ == "__main__":
    with Pool(1, backend="process", start_method="forkserver") as pool:
        print(gc.get_freeze_count(), pool.submit(gc.get_freeze_count).result(60))
"""


@pytest.mark.skipif("forkserver" not in START_METHODS, reason="no fork server here")
def test_the_fork_server_freezes_what_it_preloaded(tmp_path: Path) -> None:
    """A worker's garbage collections leave alone the objects it shares with the fork server
    (``gc.freeze`` after the preload); the caller's own collector is untouched."""
    script = tmp_path / "freeze.py"
    script.write_text(FREEZE_SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    in_caller, in_worker = map(int, done.stdout.split())
    assert in_caller == 0
    assert in_worker > 1000  # the worker side and cloudpickle: tens of thousands of objects


# --- thread pools ---------------------------------------------------------------------------------


def test_a_thread_is_started_outside_the_lock_each_job_start_takes(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch, gate: StartGate
) -> None:
    """``Thread.start()`` waits for the new thread to run; under the lock every worker thread
    takes to start a job, threads finishing jobs queued behind it (2,000 trivial jobs on 50
    threads took twice as long as on ThreadPoolExecutor). Also for a thread that replaces one
    given up on (a time limit)."""
    pool = make_pool("thread", workers=3)
    backend = pool._backend  # type: ignore[attr-defined]
    held_at_start: list[bool] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name.startswith(backend.name_prefix):
            held_at_start.append(backend._lock.locked())
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    assert [f.result(WAIT) for f in [pool.submit(abs, -i) for i in range(50)]] == list(range(50))
    held = pool.options(timeout=0.2).submit(jobs.gate_job, gate.address, "held", 1)
    gate.wait_for("held")
    with pytest.raises(jobpool.JobTimeoutError):
        held.result(WAIT)
    gate.release("held")
    assert pool.submit(abs, -7).result(WAIT) == 7
    assert len(held_at_start) >= 2 and not any(held_at_start), held_at_start


def test_a_thread_that_cannot_start_is_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """No thread to be had (``RuntimeError: can't start new thread``): the submit says so,
    the pool counts no worker that is not there (``shutdown`` would wait for it forever), and
    the next submit starts one, which runs both jobs."""
    real_start = threading.Thread.start
    failing = [True]

    def start(thread: threading.Thread) -> None:
        if failing[0] and thread.name.startswith("jobpool-thread-"):
            failing[0] = False
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    pool = jobpool.Pool(2, backend="thread")
    try:
        ran = threading.Event()
        with pytest.raises(RuntimeError, match="can't start new thread"):
            pool.submit(ran.set)
        assert pool.stats().workers == 0
        assert pool.submit(abs, -3).result(WAIT) == 3
        assert ran.wait(WAIT)
    finally:  # not waiting: a pool that counts a thread that is not there would wait forever
        pool.shutdown(wait=False)
    ending = threading.Thread(target=pool.shutdown, daemon=True)
    ending.start()
    join_or_fail(ending)
