"""The backend-independent contract, run on every backend: threads, processes and Dask.

Swapping backends is one argument, so the same calls must give the same results everywhere.
Jobs synchronise through files (workers of a Dask cluster share no memory with the test), and
every wait has a deadline that fails loudly. The Dask cases run on the run's shared LocalCluster
of worker processes (conftest.dask_address); backend-specific behaviour lives in the other files.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import jobs
from conftest import WAIT, MakePool, join_or_fail, wait_blocked_in
from jobpool import QueueFull, RemoteTraceback, SerializationError

EVERY_BACKEND = ["thread", "process-forkserver", "process-fork", "dask"]


@pytest.fixture(params=EVERY_BACKEND)
def any_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pool_on(any_backend: str, make_pool: MakePool) -> MakePool:
    """``pool_on(workers, **options)``: ``make_pool`` on the backend under test."""
    return functools.partial(make_pool, any_backend)


def test_submit_and_results(pool_on: MakePool) -> None:
    pool = pool_on()
    future = pool.submit(jobs.echo_kwargs, 1, key="v")
    assert isinstance(future, cf.Future)
    assert future.result(WAIT) == ((1,), {"key": "v"})
    futures = [pool.submit(jobs.square, i) for i in range(20)]
    done, not_done = cf.wait(futures, timeout=WAIT)
    assert not not_done and len(done) == 20
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=WAIT)) == sorted(
        i * i for i in range(20)
    )


def test_map_ordered_unordered_zip_and_starmap(pool_on: MakePool) -> None:
    pool = pool_on()
    assert list(pool.map(jobs.square, range(300), timeout=WAIT)) == [i * i for i in range(300)]
    assert list(pool.map(jobs.square, range(30), chunksize=4, timeout=WAIT)) == [
        i * i for i in range(30)
    ]
    assert sorted(pool.map(jobs.square, range(300), ordered=False, timeout=WAIT)) == [
        i * i for i in range(300)
    ]
    assert list(pool.map(jobs.add, range(5), range(10, 99), timeout=WAIT)) == [10, 12, 14, 16, 18]
    assert list(pool.starmap(jobs.add, [(1, 2), (3, 4)], timeout=WAIT)) == [3, 7]
    assert list(pool.map(jobs.square, [], timeout=WAIT)) == []


def test_a_failing_item_raises_at_its_turn(pool_on: MakePool) -> None:
    pool = pool_on()
    results = pool.map(jobs.fail_on_odd, [0, 2, 4, 5, 6], chunksize=2, timeout=WAIT)
    assert [next(results) for _ in range(3)] == [0, 2, 4]
    with pytest.raises(ValueError):
        next(results)


def test_endless_input_is_read_a_bounded_window_ahead(pool_on: MakePool) -> None:
    pool = pool_on()
    pulled = 0

    def source() -> Iterator[int]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    results = pool.map(jobs.identity, source(), chunksize=1, buffersize=4, timeout=WAIT)
    assert list(itertools.islice(results, 25)) == list(range(25))
    assert pulled <= 25 + 4
    results.close()  # type: ignore[attr-defined]


def test_workers_bounds_the_jobs_running_at_once(pool_on: MakePool, gate: jobs.StartGate) -> None:
    pool = pool_on(2)
    futures = [pool.submit(jobs.gate_job, gate.address, i, i) for i in range(6)]
    gate.wait()
    gate.wait()
    stats = pool.stats()
    assert stats.running == 2 and stats.pending == 4
    gate.release_in_turn(6)
    assert [f.result(WAIT) for f in futures] == list(range(6))
    assert gate.most_inside == 2
    assert pool.stats().done == 6


def test_backpressure_and_queue_full_lose_nothing(pool_on: MakePool, gate: jobs.StartGate) -> None:
    pool = pool_on(1, max_pending=2)
    running = pool.submit(jobs.gate_job, gate.address, "running", 0)
    gate.wait_for("running")
    queued = [pool.submit_nowait(jobs.square, 2), pool.submit(jobs.square, 3)]
    with pytest.raises(QueueFull):
        pool.submit_nowait(jobs.square, 4)
    blocked: list[Any] = []
    submitter = threading.Thread(target=lambda: blocked.append(pool.submit(jobs.square, 5)))
    submitter.start()
    wait_blocked_in(submitter, "reserve")  # submit() waits while max_pending jobs are queued
    assert not blocked
    gate.release("running")
    join_or_fail(submitter)
    assert running.result(WAIT) == 0
    assert [f.result(WAIT) for f in queued] == [4, 9]
    assert blocked[0].result(WAIT) == 25


def test_exceptions_keep_their_type_and_traceback(pool_on: MakePool, any_backend: str) -> None:
    pool = pool_on()
    with pytest.raises(ValueError, match="boom") as info:
        pool.submit(jobs.raise_value_error, "boom").result(WAIT)
    if any_backend == "thread":
        assert info.value.__traceback__ is not None
    else:
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "raise_value_error" in str(info.value.__cause__)
    assert pool.submit(jobs.square, 3).result(WAIT) == 9


def test_lambdas_closures_and_bound_methods(pool_on: MakePool) -> None:
    pool = pool_on()
    offset = 100
    assert pool.submit(lambda x: x + offset, 1).result(WAIT) == 101
    assert pool.submit(jobs.Counter(5).add, 1).result(WAIT) == 6
    assert list(pool.map(lambda x: x * offset, range(3), timeout=WAIT)) == [0, 100, 200]


def test_unserializable_arguments_are_named_at_submit(pool_on: MakePool, any_backend: str) -> None:
    if any_backend == "thread":
        pytest.skip("threads share memory: nothing is serialized")
    pool = pool_on()
    with pytest.raises(SerializationError) as info:
        pool.submit(jobs.identity, jobs.Unpicklable())
    assert info.value.path == "args[0].conn"
    assert pool.stats().submitted == 0
    assert pool.submit(jobs.square, 4).result(WAIT) == 16


def test_shutdown_cancels_waiting_jobs_and_refuses_new_ones(
    pool_on: MakePool, gate: jobs.StartGate
) -> None:
    pool = pool_on(1)
    running = pool.submit(jobs.gate_job, gate.address, "running", 1)
    gate.wait_for("running")
    waiting = [pool.submit(jobs.square, i) for i in range(5)]
    pool.shutdown(wait=False, cancel_futures=True)
    gate.release("running")
    pool.shutdown(wait=True)
    assert running.result(WAIT) == 1
    assert all(f.cancelled() for f in waiting)
    assert pool.stats().cancelled == 5
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(jobs.square, 1)
