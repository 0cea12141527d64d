"""The bounded queue: submit blocks at max_pending, submit_nowait raises QueueFull."""

from __future__ import annotations

import threading
from typing import Any, Callable

import pytest

import jobs
from conftest import WAIT, join_or_fail, wait_blocked_in
from gates import Gate
from jobpool import Pool, QueueFull
from jobpool._job import JobQueue

MakePool = Callable[..., Pool]


def test_submit_nowait_raises_queue_full_and_loses_nothing(
    make_pool: MakePool, backend: str
) -> None:
    gate = Gate(backend)
    pool = make_pool(
        backend, workers=1, max_pending=2, initializer=jobs.install_gate, initargs=gate.initargs
    )
    running = pool.submit(jobs.gated, 0)
    gate.wait_entered(1)
    queued = [pool.submit_nowait(jobs.square, 2), pool.submit_nowait(jobs.square, 3)]
    with pytest.raises(QueueFull, match="max_pending=2"):
        pool.submit_nowait(jobs.square, 4)
    assert pool.stats().pending == 2
    gate.release.set()
    assert running.result(WAIT) == 0
    assert [f.result(WAIT) for f in queued] == [4, 9]


def test_submit_blocks_until_a_slot_frees(make_pool: MakePool, backend: str) -> None:
    gate = Gate(backend)
    pool = make_pool(
        backend, workers=1, max_pending=1, initializer=jobs.install_gate, initargs=gate.initargs
    )
    running = pool.submit(jobs.gated, 0)
    gate.wait_entered(1)
    queued = pool.submit(jobs.square, 5)
    results = []
    submitter = threading.Thread(target=lambda: results.append(pool.submit(jobs.square, 6)))
    submitter.start()
    wait_blocked_in(submitter, "reserve")  # submit() waits for a free slot
    assert not results
    gate.release.set()
    join_or_fail(submitter)
    assert running.result(WAIT) == 0
    assert queued.result(WAIT) == 25
    assert results[0].result(WAIT) == 36


def test_cancelling_a_waiting_job_frees_its_slot(make_pool: MakePool, backend: str) -> None:
    gate = Gate(backend)
    pool = make_pool(
        backend, workers=1, max_pending=1, initializer=jobs.install_gate, initargs=gate.initargs
    )
    running = pool.submit(jobs.gated, 0)
    gate.wait_entered(1)
    waiting = pool.submit_nowait(jobs.square, 2)
    assert waiting.cancel()
    replacement = pool.submit_nowait(jobs.square, 3)
    gate.release.set()
    assert running.result(WAIT) == 0
    assert replacement.result(WAIT) == 9


def test_map_respects_max_pending(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend, workers=2, max_pending=3)
    assert list(pool.map(jobs.square, range(200), chunksize=1, timeout=WAIT)) == [
        i * i for i in range(200)
    ]


def test_shutdown_with_cancel_releases_blocked_submitters(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_pool("thread", workers=1, max_pending=1)
    release = threading.Event()
    running = pool.submit(jobs.blocked_until, release)
    queued = pool.submit(jobs.square, 1)  # takes the only slot
    waiting_for_slot = threading.Event()
    reserve = JobQueue.reserve

    def reserve_and_tell(queue: JobQueue, job: Any, block: bool) -> None:
        waiting_for_slot.set()  # the queue is full: this call blocks until a slot frees
        reserve(queue, job, block)

    monkeypatch.setattr(JobQueue, "reserve", reserve_and_tell)
    errors: list[BaseException] = []

    def submit_more() -> None:
        try:
            pool.submit(jobs.square, 2)
        except BaseException as exc:
            errors.append(exc)

    submitter = threading.Thread(target=submit_more)
    submitter.start()
    assert waiting_for_slot.wait(WAIT)
    pool.shutdown(wait=False, cancel_futures=True)  # frees the slot and refuses the submitter
    submitter.join(WAIT)
    assert not submitter.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors
    assert queued.cancelled()
    release.set()
    assert running.result(WAIT) is None
