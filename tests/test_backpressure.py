"""The bounded queue: submit blocks at max_pending, submit_nowait raises QueueFull."""

from __future__ import annotations

import threading

import pytest

import jobs
from conftest import WAIT, MakePool, join_or_fail, wait_blocked_in
from jobpool import QueueFull


def test_submit_nowait_raises_queue_full_and_loses_nothing(
    make_pool: MakePool, backend: str, gate: jobs.StartGate
) -> None:
    pool = make_pool(backend, workers=1, max_pending=2)
    running = pool.submit(jobs.gate_job, gate.address, "running", 0)
    gate.wait_for("running")
    queued = [pool.submit_nowait(jobs.square, 2), pool.submit_nowait(jobs.square, 3)]
    with pytest.raises(QueueFull, match="max_pending=2"):
        pool.submit_nowait(jobs.square, 4)
    assert pool.stats().pending == 2
    gate.release("running")
    assert running.result(WAIT) == 0
    assert [f.result(WAIT) for f in queued] == [4, 9]


def test_submit_blocks_until_a_slot_frees(
    make_pool: MakePool, backend: str, gate: jobs.StartGate
) -> None:
    pool = make_pool(backend, workers=1, max_pending=1)
    running = pool.submit(jobs.gate_job, gate.address, "running", 0)
    gate.wait_for("running")
    queued = pool.submit(jobs.square, 5)
    results = []
    submitter = threading.Thread(target=lambda: results.append(pool.submit(jobs.square, 6)))
    submitter.start()
    wait_blocked_in(submitter, "reserve")  # submit() waits for a free slot
    assert not results
    gate.release("running")
    join_or_fail(submitter)
    assert running.result(WAIT) == 0
    assert queued.result(WAIT) == 25
    assert results[0].result(WAIT) == 36


def test_cancelling_a_waiting_job_frees_its_slot(
    make_pool: MakePool, backend: str, gate: jobs.StartGate
) -> None:
    pool = make_pool(backend, workers=1, max_pending=1)
    running = pool.submit(jobs.gate_job, gate.address, "running", 0)
    gate.wait_for("running")
    waiting = pool.submit_nowait(jobs.square, 2)
    assert waiting.cancel()
    replacement = pool.submit_nowait(jobs.square, 3)
    gate.release("running")
    assert running.result(WAIT) == 0
    assert replacement.result(WAIT) == 9


def test_map_respects_max_pending(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend, workers=2, max_pending=3)
    assert list(pool.map(jobs.square, range(200), chunksize=1, timeout=WAIT)) == [
        i * i for i in range(200)
    ]


def test_shutdown_with_cancel_releases_blocked_submitters(
    make_pool: MakePool, gate: jobs.StartGate
) -> None:
    pool = make_pool("thread", workers=1, max_pending=1)
    running = pool.submit(jobs.gate_job, gate.address, "running")
    gate.wait_for("running")
    queued = pool.submit(jobs.square, 1)  # takes the only slot
    errors: list[BaseException] = []

    def submit_more() -> None:
        try:
            pool.submit(jobs.square, 2)
        except BaseException as exc:
            errors.append(exc)

    submitter = threading.Thread(target=submit_more)
    submitter.start()
    wait_blocked_in(submitter, "reserve")  # the queue is full: it waits for a slot
    pool.shutdown(wait=False, cancel_futures=True)  # frees the slot and refuses the submitter
    join_or_fail(submitter)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors
    assert queued.cancelled()
    gate.release("running")
    assert running.result(WAIT) is None
