"""The pool's own logic, driven through an in-memory fake backend: no threads, no processes.

Everything the pool does between ``submit`` and a backend (admission, backpressure, ``map``'s
window, cancel, kill, shutdown, a broken pool) runs here in the test's own thread, one step at a
time, so each test states exactly when a job runs (see fake_backend.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

import fake_backend
import jobs
from conftest import WAIT
from fake_backend import FakeBackend
from jobpool import InitializerError, JobKilledError, Pool, QueueFull, _backend_factory


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pool]:
    monkeypatch.setitem(_backend_factory.FACTORIES, "fake", fake_backend.factory())
    made = Pool(2, backend="fake", max_pending=3)
    yield made
    made.shutdown(wait=True, cancel_futures=True)


def fake() -> FakeBackend:
    return fake_backend.made[-1]


def test_jobs_wait_until_the_backend_runs_them(pool: Pool) -> None:
    futures = [pool.submit(jobs.square, i) for i in range(3)]
    assert fake().prepared == 3  # prepared in the submitting thread, before queueing
    assert pool.stats().pending == 3 and not any(f.done() for f in futures)
    assert fake().run(2) == 2
    assert [f.done() for f in futures] == [True, True, False]
    stats = pool.stats()
    assert (stats.submitted, stats.pending, stats.done, stats.workers) == (3, 1, 2, 2)


def test_backpressure_and_a_cancel_that_frees_a_slot(pool: Pool) -> None:
    waiting = [pool.submit_nowait(jobs.square, i) for i in range(3)]
    with pytest.raises(QueueFull, match="max_pending=3"):
        pool.submit_nowait(jobs.square, 3)
    assert waiting[1].cancel()  # its slot is free at once, not when it is dequeued
    later = pool.submit_nowait(jobs.square, 4)
    assert fake().run(10) == 3  # the cancelled job is skipped
    assert [waiting[0].result(0), waiting[2].result(0), later.result(0)] == [0, 4, 16]
    assert pool.stats().cancelled == 1


def test_map_reads_only_its_window_ahead(pool: Pool) -> None:
    pulled = []

    def source() -> Iterator[int]:
        for i in itertools.count():
            pulled.append(i)
            yield i

    results = pool.map(jobs.square, source(), chunksize=1, buffersize=2, timeout=WAIT)
    assert len(pulled) == 2  # the first window is submitted at once, as Executor.map does
    fake().run(2)
    assert next(results) == 0
    assert len(pulled) == 3  # one result taken: one more item read, no more
    assert next(results) == 1
    assert len(pulled) == 4
    results.close()  # type: ignore[attr-defined]
    assert fake().run(10) == 0  # the two chunks still in flight were cancelled: none runs
    assert pool.stats().cancelled == 2


def test_kill_cancels_a_waiting_job_and_asks_the_backend_for_a_running_one(pool: Pool) -> None:
    running, waiting = pool.submit(jobs.square, 1), pool.submit(jobs.square, 2)
    started = fake().start()
    assert started is not None and started.future is running
    assert pool.kill(waiting) and waiting.cancelled()
    assert pool.kill(running)
    with pytest.raises(JobKilledError):
        running.result(0)
    assert not pool.kill(running)  # done already


def test_a_backend_that_cannot_stop_running_jobs_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(_backend_factory.FACTORIES, "fake", fake_backend.factory("no can do"))
    with Pool(1, backend="fake") as pool:
        future = pool.submit(jobs.square, 3)
        fake().start()
        with pytest.raises(NotImplementedError, match="no can do"):
            pool.kill(future)
        fake().shutdown(wait=True)
        assert future.result(0) == 9


def test_shutdown_refuses_new_jobs_and_cancels_on_request(pool: Pool) -> None:
    queued = [pool.submit(jobs.square, i) for i in range(2)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(jobs.square, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.map(jobs.square, [1])


def test_a_broken_pool_fails_what_waits_and_refuses_the_rest(pool: Pool) -> None:
    queued = pool.submit(jobs.square, 1)
    error = InitializerError("the fake's workers cannot start")
    fake().setup.on_broken(error)
    assert queued.exception(0) is error
    with pytest.raises(InitializerError, match="cannot start") as raised:
        pool.submit(jobs.square, 2)
    assert raised.value.__cause__ is error


def test_options_give_their_jobs_a_time_limit(pool: Pool) -> None:
    pool.options(timeout=5).submit(jobs.square, 1)
    pool.submit(jobs.square, 2)
    first, second = fake().start(), fake().start()
    assert first is not None and second is not None
    assert (first.timeout, second.timeout) == (5.0, None)


def test_every_backend_name_is_checked(pool: Pool) -> None:
    with pytest.raises(ValueError, match="unknown backend 'proc'; choose one of 'thread'"):
        Pool(1, backend="proc")
    with pytest.raises(ValueError, match="start_method= applies only to backend='process'"):
        Pool(1, backend="fake", start_method="spawn")


def test_the_fake_is_a_backend(pool: Pool) -> None:
    """The fake, like every backend, is typed against the Backend protocol (see
    fake_backend.factory, checked by mypy in test_typing.py); here: it is what the pool uses."""
    backend: Any = pool._backend
    assert isinstance(backend, FakeBackend) and backend.name == "fake"
