"""Priorities (issue 26): ``pool.options(priority=n)``; among jobs waiting to start, higher
priority first, first come first served within one priority, on every backend.

The order jobs start in is read at a ``StartGate``: the workers are held there by one job each,
jobs of mixed priorities are queued behind them, then the workers are released and each job
reports as it starts. The queue itself is tested directly too: its order, its stop markers, and
the move from the plain FIFO onto the heap while threads wait on it.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jobs
from conftest import BACKENDS, WAIT, join_or_fail, wait_until
from jobpool import Pool
from jobpool._job import Call, Job, JobQueue

MakePool = Callable[..., Pool]
EVERY = [*BACKENDS, "dask"]
PRIORITIES = [0, 5, -1, 5, 10, 0, -1, 3, 10, 0]


def expected_order(priorities: list[int]) -> list[str]:
    ranked = sorted(range(len(priorities)), key=lambda i: (-priorities[i], i))
    return [str(i) for i in ranked]


def started_order(gate: jobs.StartGate, count: int) -> list[str]:
    return [gate.wait(WAIT)[0] for _ in range(count)]


@pytest.mark.parametrize("backend", EVERY)
def test_waiting_jobs_start_by_priority_then_first_come(
    make_pool: MakePool, backend: str, gate: jobs.StartGate
) -> None:
    pool = make_pool(backend, 1)
    blocker = pool.submit(jobs.gate_job, gate.address, "blocker")
    assert gate.wait(WAIT)[0] == "blocker"
    futures = [
        pool.options(priority=p).submit(jobs.gate_job, gate.address, str(i), i, hold=False)
        for i, p in enumerate(PRIORITIES)
    ]
    assert pool.stats().pending == len(PRIORITIES)
    gate.release("blocker")
    assert started_order(gate, len(PRIORITIES)) == expected_order(PRIORITIES)
    assert [f.result(WAIT) for f in futures] == list(range(len(PRIORITIES)))
    assert blocker.result(WAIT) is None


@pytest.mark.parametrize("backend", ["thread", "process-forkserver", "dask"])
def test_two_workers_take_the_highest_first(
    make_pool: MakePool, backend: str, gate: jobs.StartGate
) -> None:
    pool = make_pool(backend, 2)
    blockers = [pool.submit(jobs.gate_job, gate.address, f"blocker{i}") for i in range(2)]
    gate.wait_for("blocker0")
    gate.wait_for("blocker1")
    low = [pool.submit(jobs.gate_job, gate.address, f"low{i}") for i in range(2)]
    high = [
        pool.options(priority=1).submit(jobs.gate_job, gate.address, f"high{i}") for i in range(2)
    ]
    gate.release("blocker0")
    gate.release("blocker1")
    first_two = {gate.wait(WAIT)[0], gate.wait(WAIT)[0]}
    assert first_two == {"high0", "high1"}
    for tag in ("high0", "high1", "low0", "low1"):
        gate.release(tag)
    assert all(f.result(WAIT) is None for f in blockers + low + high)


def test_map_and_run_take_a_priority(make_pool: MakePool, gate: jobs.StartGate) -> None:
    import asyncio

    pool = make_pool("thread", 1)
    blocker = pool.submit(jobs.gate_job, gate.address, "blocker")
    gate.wait_for("blocker")
    low = pool.map(jobs.gate_job, [gate.address] * 2, ["map0", "map1"], [0, 1], [False] * 2)
    high = pool.options(priority=2).map(
        jobs.gate_job, [gate.address] * 2, ["urgent0", "urgent1"], [2, 3], [False] * 2
    )

    async def run() -> Any:
        return await pool.options(priority=1).run(jobs.gate_job, gate.address, "run", 4, False)

    running = threading.Thread(target=lambda: asyncio.run(run()), name="run")
    running.start()
    wait_until(lambda: pool.stats().pending == 5, "the maps' windows and run() to be queued")
    gate.release("blocker")
    assert started_order(gate, 5) == ["urgent0", "urgent1", "run", "map0", "map1"]
    assert list(high) == [2, 3] and list(low) == [0, 1]
    join_or_fail(running)
    assert blocker.result(WAIT) is None


def test_a_priority_must_be_an_int(make_pool: MakePool) -> None:
    pool = make_pool("thread", 1)
    for bad in (1.5, "high", True, None):
        with pytest.raises(TypeError, match="priority must be an int"):
            pool.options(priority=bad)  # type: ignore[arg-type]
    assert pool.options(priority=-(10**30)).submit(jobs.square, 3).result(WAIT) == 9


def test_threads_waiting_on_the_queue_see_the_first_job_with_a_priority(
    make_pool: MakePool,
) -> None:
    """Idle thread workers block on the plain FIFO; the move onto the heap wakes them."""
    pool = make_pool("thread", 3)
    assert [f.result(WAIT) for f in [pool.submit(jobs.square, i) for i in range(6)]]
    assert pool.options(priority=1).submit(jobs.square, 7).result(WAIT) == 49
    assert [f.result(WAIT) for f in [pool.submit(jobs.square, i) for i in range(6)]] == [
        i * i for i in range(6)
    ]
    pool.shutdown(wait=True)  # the stop markers reach every thread through the heap


# --- the queue itself ---------------------------------------------------------------------------


def job(priority: int, tag: Any = None) -> Job:
    return Job(Call(jobs.identity, (tag,), {}), None, priority)


def tags(jobs_: list[Any]) -> list[Any]:
    return [None if j is None else j.work.args[0] for j in jobs_]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.integers(-3, 3), max_size=30), st.integers(0, 30))
def test_the_queue_order_is_priority_then_arrival(priorities: list[int], switch_at: int) -> None:
    q = JobQueue(None)
    for index, priority in enumerate(priorities):
        q.put(job(priority if index >= switch_at else 0, index))
    got = []
    while (taken := q.get_nowait()) is not None:
        got.append(taken.work.args[0])
    ranks = [p if i >= switch_at else 0 for i, p in enumerate(priorities)]
    assert got == sorted(range(len(priorities)), key=lambda i: (-ranks[i], i))
    assert q.qsize() == 0


def test_stop_markers_come_after_every_job_and_qsize_skips_them() -> None:
    q = JobQueue(None)
    q.put(job(0, "a"))
    q.put(None)
    q.put(job(2, "b"))  # moves onto the heap: the stop marker goes after every job
    q.put(job(0, "c"))
    assert q.qsize() == 3
    assert tags([q.get(), q.get(), q.get(), q.get()]) == ["b", "a", "c", None]
    assert q.qsize() == 0


def test_put_back_and_drain_in_both_modes() -> None:
    for first in (0, 1):
        q = JobQueue(3)
        a, b, c = job(first, "a"), job(0, "b"), job(1, "c")
        for j in (a, b, c):
            q.reserve(j, block=False)
            q.put(j)
        taken = q.get_nowait()
        assert taken is not None
        q.put_back(taken)
        assert tags(q.drain()) == tags([taken, *[j for j in (a, c, b) if j is not taken]])
        assert q.qsize() == 0 and not any(j.holds_slot for j in (a, b, c))


def test_threads_blocked_on_the_fifo_move_onto_the_heap() -> None:
    q = JobQueue(None)
    got: queue.SimpleQueue[Any] = queue.SimpleQueue()
    threads = [
        threading.Thread(target=lambda: got.put(q.get()), name=f"taker{i}") for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for i in range(3):
        q.put(job(i + 1, i))  # the first moves the queue onto the heap, waking a taker
    for thread in threads:
        join_or_fail(thread)
    assert sorted(got.get(timeout=WAIT).work.args[0] for _ in range(3)) == [0, 1, 2]
