"""The lighter condition inside every job's future behaves as ``threading.Condition`` does for
everything ``concurrent.futures`` asks of it: result() with and without timeouts from many
threads, wait(), as_completed(), callbacks, cancellation, asyncio.wrap_future."""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures as cf
import threading
from typing import Any

import pytest

import jobs
from conftest import WAIT, MakePool, join_or_fail
from jobpool import _condition
from jobpool._condition import FutureCondition
from jobpool._job import JobFuture


def test_a_job_future_uses_the_light_condition_and_the_stdlib_attributes() -> None:
    future = JobFuture()
    assert isinstance(future._condition, FutureCondition)
    assert set(vars(future)) == set(vars(cf.Future()))


def test_many_threads_waiting_on_one_future_all_wake() -> None:
    future = JobFuture()
    waiting = threading.Barrier(9)
    results: list[Any] = []

    def wait_for_it() -> None:
        waiting.wait(WAIT)
        results.append(future.result(WAIT))

    threads = [threading.Thread(target=wait_for_it) for _ in range(8)]
    for thread in threads:
        thread.start()
    waiting.wait(WAIT)
    future.set_result("done")
    for thread in threads:
        join_or_fail(thread)
    assert results == ["done"] * 8


def test_result_timeout_on_a_pending_future_raises_and_leaves_no_waiter() -> None:
    future = JobFuture()
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=0.01)
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=0)
    condition = future._condition
    assert isinstance(condition, FutureCondition)
    assert not condition._waiters
    future.set_result(1)
    assert future.result(0) == 1


def test_wait_and_notify_need_the_lock() -> None:
    condition = FutureCondition()
    with pytest.raises(RuntimeError, match="un-acquired"):
        condition.wait(0)
    with pytest.raises(RuntimeError, match="un-acquired"):
        condition.notify_all()
    with condition:
        with condition:  # reentrant, as the stdlib's RLock-based condition
            assert condition.wait(0) is False
        condition.notify_all()


def test_timed_out_waits_leave_no_waiter_behind() -> None:
    """Each wait that times out removes its own waiter, so the list does not grow."""
    condition = FutureCondition()
    for _ in range(200):
        with condition:
            condition.wait(0.0001)
            condition.notify_all()
            assert not condition._waiters


def test_a_wait_that_timed_out_as_all_were_notified_returns_false(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """notify_all() may take the list of waiters between a waiter's timeout and its taking the
    lock back: that waiter then finds no list to leave, and reports its timeout."""
    waiting, go_on = threading.Event(), threading.Event()

    class TimesOutWhenTold:
        """A waiter lock whose timed wait ends (False) only once the test says so."""

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if timeout == -1:
                return True  # the wait's own first acquire
            waiting.set()
            assert go_on.wait(WAIT)
            return False

        def release(self) -> None:
            pass

    monkeypatch.setattr(_condition, "_allocate_lock", TimesOutWhenTold)
    condition = FutureCondition()
    outcome: list[bool] = []

    def wait_briefly() -> None:
        with condition:
            outcome.append(condition.wait(5))

    thread = threading.Thread(target=wait_briefly)
    thread.start()
    assert waiting.wait(WAIT)
    with condition:  # the waiter timed out; it takes the lock back only after this
        condition.notify_all()
        go_on.set()
    join_or_fail(thread)
    assert outcome == [False]
    assert condition._waiters is None


def test_the_condition_is_the_futures_lock_itself() -> None:
    """``with``, ``acquire`` and ``release`` are a reentrant lock's own (no Python layer)."""
    condition = FutureCondition()
    assert isinstance(condition, _thread.RLock)
    with condition, condition:  # reentrant
        assert condition._is_owned()  # type: ignore[attr-defined]
    assert condition.acquire(False)
    condition.release()
    assert not condition._is_owned()  # type: ignore[attr-defined]


def test_cancel_wakes_waiters_and_runs_callbacks() -> None:
    future = JobFuture()
    called: list[bool] = []
    future.add_done_callback(lambda f: called.append(f.cancelled()))
    assert future.cancel()
    with pytest.raises(cf.CancelledError):
        future.result(WAIT)
    assert called == [True]


def test_stdlib_wait_and_as_completed_work_on_pool_futures(
    make_pool: MakePool, backend: str
) -> None:
    pool = make_pool(backend)
    futures = [pool.submit(jobs.square, i) for i in range(20)]
    done, not_done = cf.wait(futures, timeout=WAIT)
    assert not not_done
    assert sorted(f.result() for f in done) == sorted(i * i for i in range(20))
    more = [pool.submit(jobs.square, i) for i in range(20)]
    assert sorted(f.result() for f in cf.as_completed(more, timeout=WAIT)) == sorted(
        i * i for i in range(20)
    )
    first = [pool.submit(jobs.square, 3)]
    done, _ = cf.wait(first, timeout=WAIT, return_when=cf.FIRST_COMPLETED)
    assert done == set(first)


def test_stdlib_wait_on_futures_still_pending(make_pool: MakePool, gate: jobs.StartGate) -> None:
    pool = make_pool("thread", workers=1)
    blocked = pool.submit(jobs.gate_job, gate.address, "blocked")
    done, not_done = cf.wait([blocked], timeout=0.01)
    assert not done and not_done == {blocked}
    gate.release("blocked")
    done, _ = cf.wait([blocked], timeout=WAIT)
    assert done == {blocked}


def test_asyncio_wrap_future_of_a_pool_future(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend)

    async def main() -> int:
        value: int = await asyncio.wrap_future(pool.submit(jobs.square, 7))
        return value

    assert asyncio.run(main()) == 49


def test_a_python_with_other_future_attributes_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where Future.__init__ differs from the known one, it runs, and only the lock is swapped."""
    from jobpool import _job

    monkeypatch.setattr(_job, "_SAME_ATTRIBUTES", False)
    future = JobFuture()
    assert isinstance(future._condition, FutureCondition)
    future.set_result(5)
    assert future.result(0) == 5
