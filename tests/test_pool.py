"""The Executor contract on every local backend: submit, results, futures, shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from typing import Any

import pytest

import jobs
from conftest import LOCAL_BACKENDS, WAIT, MakePool, join_or_fail
from jobpool import Pool


def test_submit_returns_a_concurrent_future(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend)
    future = pool.submit(jobs.add, 2, b=3)
    assert isinstance(future, cf.Future)
    assert future.result(WAIT) == 5


@pytest.mark.parametrize("backend_name", LOCAL_BACKENDS)
def test_every_start_method_runs_lambdas_and_closures(
    make_pool: MakePool, backend_name: str
) -> None:
    pool = make_pool(backend_name)
    offset = 10
    assert pool.submit(lambda x: x + offset, 5).result(WAIT) == 15
    assert list(pool.map(lambda x: x * offset, range(5), timeout=WAIT)) == [0, 10, 20, 30, 40]


def test_same_results_on_every_backend(make_pool: MakePool) -> None:
    results = []
    for name in LOCAL_BACKENDS:
        pool = make_pool(name)
        results.append(
            (
                [f.result(WAIT) for f in [pool.submit(jobs.square, i) for i in range(20)]],
                list(pool.map(jobs.add, range(10), range(10, 20), timeout=WAIT)),
                list(pool.starmap(jobs.add, [(1, 2), (3, 4)], timeout=WAIT)),
                pool.submit(jobs.echo_kwargs, 1, key="v").result(WAIT),
            )
        )
    assert all(r == results[0] for r in results)


def test_futures_work_with_wait_and_as_completed(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend)
    futures = [pool.submit(jobs.square, i) for i in range(10)]
    _done, not_done = cf.wait(futures, timeout=WAIT)
    assert not not_done
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=WAIT)) == [
        i * i for i in range(10)
    ]


def test_asyncio_run_in_executor(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend)

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        return list(
            await asyncio.gather(*(loop.run_in_executor(pool, jobs.square, i) for i in range(5)))
        )

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("backend_name", LOCAL_BACKENDS)
def test_running_jobs_never_exceed_workers(
    make_pool: MakePool, backend_name: str, gate: jobs.StartGate
) -> None:
    pool = make_pool(backend_name, workers=3)
    futures = [pool.submit(jobs.gate_job, gate.address, i, i) for i in range(12)]
    for _ in range(3):
        gate.wait()
    stats = pool.stats()
    assert stats.running == 3
    assert stats.pending == 9
    gate.release_in_turn(12)
    assert [f.result(WAIT) for f in futures] == list(range(12))
    assert gate.most_inside == 3
    assert pool.stats().done == 12


def test_job_exception_keeps_type_and_traceback(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend)
    future = pool.submit(jobs.raise_value_error, "boom")
    with pytest.raises(ValueError, match="boom") as info:
        future.result(WAIT)
    if backend != "thread":
        assert "raise_value_error" in str(info.value.__cause__)
    else:
        assert info.value.__traceback__ is not None
    assert pool.submit(jobs.square, 3).result(WAIT) == 9


class TestShutdown:
    def test_submit_after_shutdown_raises(self, make_pool: MakePool, backend: str) -> None:
        pool = make_pool(backend)
        pool.shutdown()
        with pytest.raises(RuntimeError, match="after shutdown"):
            pool.submit(jobs.square, 1)
        with pytest.raises(RuntimeError):
            pool.map(jobs.square, [1])

    def test_shutdown_without_wait_still_finishes_queued_jobs(
        self, make_pool: MakePool, backend: str
    ) -> None:
        pool = make_pool(backend, workers=1)
        futures = [pool.submit(jobs.square, i) for i in range(20)]
        pool.shutdown(wait=False)
        assert [f.result(WAIT) for f in futures] == [i * i for i in range(20)]
        pool.shutdown(wait=True)

    def test_cancel_futures_cancels_only_waiting_jobs(
        self, make_pool: MakePool, backend: str, gate: jobs.StartGate
    ) -> None:
        pool = make_pool(backend, workers=1)
        running = pool.submit(jobs.gate_job, gate.address, "running", 1)
        gate.wait_for("running")
        waiting = [pool.submit(jobs.square, i) for i in range(5)]
        pool.shutdown(wait=False, cancel_futures=True)
        gate.release("running")
        pool.shutdown(wait=True)
        assert running.result(WAIT) == 1
        assert all(f.cancelled() for f in waiting)
        assert pool.stats().cancelled == 5
        # concurrent.futures.wait() and as_completed() hear of these cancels too.
        assert cf.wait(waiting, timeout=WAIT).done == set(waiting)
        assert set(cf.as_completed(waiting, timeout=WAIT)) == set(waiting)

    def test_with_block_waits_for_jobs(self, backend: str) -> None:
        from conftest import pool_kwargs

        with Pool(2, **pool_kwargs(backend)) as pool:
            futures = [pool.submit(jobs.square, i) for i in range(10)]
        assert all(f.done() for f in futures)

    def test_exception_in_with_block_cancels_waiting_and_stops(
        self, backend: str, gate: jobs.StartGate
    ) -> None:
        from conftest import pool_kwargs

        with pytest.raises(KeyError), Pool(1, **pool_kwargs(backend)) as pool:
            running = pool.submit(jobs.gate_job, gate.address, "running", 7)
            gate.wait_for("running")
            waiting = pool.submit(jobs.square, 2)
            # The running job ends only once the exit has cancelled the waiting one.
            waiting.add_done_callback(lambda _: gate.release("running"))
            raise KeyError("caller failed")
        assert running.result(WAIT) == 7
        assert waiting.cancelled()

    def test_shutdown_twice_is_harmless(
        self, make_pool: MakePool, backend: str, gate: jobs.StartGate
    ) -> None:
        pool = make_pool(backend, workers=1)
        held = pool.submit(jobs.gate_job, gate.address, "held", -1)
        gate.wait_for("held")
        queued = [pool.submit(jobs.square, i) for i in range(5)]
        pool.shutdown(wait=False)
        gate.release("held")
        pool.shutdown()  # the second call still waits for every job and worker
        assert all(f.done() for f in [held, *queued])
        assert [f.result(0) for f in [held, *queued]] == [-1, 0, 1, 4, 9, 16]
        stats = pool.stats()
        assert stats.done == 6 and stats.running == 0 and stats.workers == 0
        pool.shutdown()
        pool.shutdown(wait=False, cancel_futures=True)
        assert pool.stats() == stats
        with pytest.raises(RuntimeError, match="after shutdown"):
            pool.submit(jobs.square, 1)


def test_kwargs_named_like_options_go_to_the_function(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend)
    args, kwargs = pool.submit(jobs.echo_kwargs, 1, fn=2, timeout=3).result(WAIT)
    assert args == (1,) and kwargs == {"fn": 2, "timeout": 3}


def test_max_workers_alias() -> None:
    pool = Pool(max_workers=3)
    try:
        assert pool.workers == 3
    finally:
        pool.shutdown()


def test_repr_and_properties(make_pool: MakePool) -> None:
    pool = make_pool("thread", workers=2, max_pending=5)
    assert pool.workers == 2 and pool.backend == "thread" and pool.max_pending == 5
    assert "thread" in repr(pool)


def test_a_dropped_pool_stops_its_workers(backend: str) -> None:
    import gc
    import multiprocessing
    import weakref

    from conftest import pool_kwargs

    pool = Pool(2, **pool_kwargs(backend))
    assert pool.submit(jobs.square, 2).result(WAIT) == 4
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None, "the pool's own threads must not keep it alive"
    from multiprocessing.connection import wait

    for child in multiprocessing.active_children():
        if child.name.startswith("jobpool-worker"):
            try:
                sentinel = child.sentinel
            except ValueError:  # "process object is closed": the pool already reaped it
                continue
            # The pool reaps its workers itself, so wait for the exit, not for our own waitpid.
            assert wait([sentinel], WAIT), f"{child} outlived its dropped pool"
    for thread in threading.enumerate():  # let the pool finish reaping what it started
        if thread.name == "jobpool-dispatcher":
            join_or_fail(thread)


def test_a_forked_child_does_not_inherit_open_pools(make_pool: MakePool) -> None:
    """A fork-started worker exits through threading's exit hooks: it must not try to shut down
    its parent's pools there (their threads do not exist in it; their locks may be held)."""
    import os

    from jobpool import _lifecycle

    pool = make_pool("thread")
    assert pool in _lifecycle._open_pools
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        os._exit(0 if not list(_lifecycle._open_pools) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
