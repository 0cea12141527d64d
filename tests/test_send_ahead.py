"""Jobs sent to a busy worker ahead of time (``_process/_send_ahead.py``).

The dispatcher gives a worker with short jobs its next few jobs before the running one ends.
These tests check what that must never cost: a job waiting behind one that hangs, crashes,
times out or is killed still runs (exactly once) elsewhere, a killed waiting job never runs,
and terminate() leaves no job unresolved.

To put jobs behind a running one on purpose, the tests hold both workers at a gate and make the
dispatcher send ahead whatever its job-time estimate says (``SHORT_JOB_SECONDS`` raised); the
recall timer is raised too while the jobs are placed, so only the path under test moves them.
"""

from __future__ import annotations

import socket
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, wait
from typing import Any, Callable

import pytest

import hostile
import jobs
from conftest import START_METHODS, WAIT, join_or_fail
from jobpool import JobKilledError, JobTimeoutError, Pool, WorkerCrashedError, _platform
from jobpool._job import Call, Job, JobQueue
from jobpool._process import _handle, _send_ahead, _state
from jobpool._process._frames import FrameReader, write_frame, write_frames
from jobpool._process._in_worker import _Inbox
from jobpool._process._line import JobLine
from jobpool._process._send_ahead import AHEAD_JOBS
from jobpool._process._state import WorkerState
from jobpool._protocol import DEFINE_FN, RUN_CALL, RUN_CHUNK, STOP

BACKEND = "process-forkserver"


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Send ahead to any busy worker; recall only when a test lowers the timer again."""
    monkeypatch.setattr(_state, "SHORT_JOB_SECONDS", 3600.0)
    monkeypatch.setattr(_state, "ONE_AHEAD_SECONDS", 3600.0)
    monkeypatch.setattr(_state, "RECALL_AFTER_SECONDS", 3600.0)
    return monkeypatch


@pytest.fixture
def marks() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        yield directory


def _dispatcher(pool: Pool) -> Any:
    return pool._backend._dispatcher  # type: ignore[attr-defined]


def _warm_pool(
    make_pool: Callable[..., Pool], gate: jobs.StartGate, backend: str = BACKEND, **options: Any
) -> Pool:
    """A 2-worker pool in which each worker ran one job, so both have a job time (no job is
    sent ahead to a worker before)."""
    pool = make_pool(backend, 2, **options)
    warm = [pool.submit(jobs.gate_job, gate.address, f"warm{i}", i) for i in range(2)]
    gate.wait_for("warm0")
    gate.wait_for("warm1")
    gate.release("warm0")
    gate.release("warm1")
    assert [f.result(WAIT) for f in warm] == [0, 1]
    return pool


def _marked(pool: Pool, marks: str, n: int) -> list[Future[Any]]:
    """``n`` jobs that record in ``marks`` that they ran (once), returning their index."""
    return [pool.submit(jobs.mark_run, marks, i, i) for i in range(n)]


def _place(
    pool: Pool, gate: jobs.StartGate, queue_jobs: Callable[[], list[Future[Any]]]
) -> tuple[list[Future[Any]], list[Future[Any]], list[list[Future[Any]]]]:
    """Hold both workers at the gate ("a0", "a1"), queue ``queue_jobs()``, send them ahead.

    Returns the two held jobs, the queued ones, and per worker the futures waiting in its pipe.
    """
    held = [pool.submit(jobs.gate_job, gate.address, f"a{i}", f"a{i}") for i in range(2)]
    gate.wait_for("a0")
    gate.wait_for("a1")
    futures = queue_jobs()
    dispatcher = _dispatcher(pool)
    dispatcher.call(lambda: None)  # one turn of its loop ends with the send-ahead step
    ahead = dispatcher.call(
        lambda: [[j.future for j in h.ahead] for h in dispatcher.workers.handles]
    )
    return held, futures, ahead


def _leader(pool: Pool, gate: jobs.StartGate, leader: str) -> Future[Any]:
    """The job the queued ones wait behind: one that hangs at the gate ("hung", released as
    "hung"), or one that ends its worker ("crash")."""
    if leader == "hung":
        return pool.submit(jobs.gate_job, gate.address, "hung", "hung")
    assert leader == "crash", leader
    return pool.submit(jobs.exit_now, 3)


def _release_held(gate: jobs.StartGate, held: list[Future[Any]]) -> None:
    gate.release("a0")
    gate.release("a1")
    assert sorted(f.result(WAIT) for f in held) == ["a0", "a1"]


def _assert_each_ran_once(futures: list[Future[Any]], marks: str, n: int) -> None:
    assert [f.result(WAIT) for f in futures] == list(range(n))
    assert sorted(jobs.runs_in(marks), key=int) == [str(i) for i in range(n)]


@pytest.mark.parametrize("start_method", START_METHODS)
def test_jobs_behind_a_hung_job_are_recalled_and_run_elsewhere(
    make_pool: Callable[..., Pool],
    gate: jobs.StartGate,
    marks: str,
    eager: pytest.MonkeyPatch,
    start_method: str,
) -> None:
    pool = _warm_pool(make_pool, gate, f"process-{start_method}")
    held, futures, ahead = _place(
        pool,
        gate,
        lambda: [
            pool.submit(jobs.gate_job, gate.address, "hung", "hung"),
            *_marked(pool, marks, 7),
        ],
    )
    assert sorted(map(len, ahead)) == [AHEAD_JOBS, AHEAD_JOBS]
    assert any(queue[0] is futures[0] for queue in ahead)  # the hung job leads one pipe
    assert futures[0].running() and not futures[0].cancel()  # sent ahead: already running
    eager.setattr(_state, "RECALL_AFTER_SECONDS", 0.01)
    _release_held(gate, held)
    short = futures[1:]
    done, _ = wait(short, timeout=WAIT)
    assert done == set(short), "jobs stayed behind the hung job"
    _assert_each_ran_once(short, marks, 7)
    assert not futures[0].done()
    gate.release("hung")
    assert futures[0].result(WAIT) == "hung"


def test_jobs_behind_a_crash_run_elsewhere_once(
    make_pool: Callable[..., Pool], gate: jobs.StartGate, marks: str, eager: pytest.MonkeyPatch
) -> None:
    pool = _warm_pool(make_pool, gate)
    held, futures, ahead = _place(
        pool, gate, lambda: [pool.submit(jobs.exit_now, 3), *_marked(pool, marks, 7)]
    )
    assert any(queue[:1] == [futures[0]] and len(queue) == AHEAD_JOBS for queue in ahead)
    _release_held(gate, held)
    with pytest.raises(WorkerCrashedError):
        futures[0].result(WAIT)
    _assert_each_ran_once(futures[1:], marks, 7)
    assert pool.submit(jobs.square, 4).result(WAIT) == 16


def test_jobs_behind_a_timed_out_job_run_elsewhere_once(
    make_pool: Callable[..., Pool], gate: jobs.StartGate, marks: str, eager: pytest.MonkeyPatch
) -> None:
    pool = _warm_pool(make_pool, gate)
    slow = pool.options(timeout=0.5)
    held, futures, ahead = _place(
        pool,
        gate,
        lambda: [slow.submit(jobs.gate_job, gate.address, "slow"), *_marked(pool, marks, 7)],
    )
    assert any(queue[:1] == [futures[0]] for queue in ahead)
    _release_held(gate, held)
    with pytest.raises(JobTimeoutError):
        futures[0].result(WAIT)
    _assert_each_ran_once(futures[1:], marks, 7)


def test_killing_a_job_that_waits_in_a_pipe_means_it_never_runs(
    make_pool: Callable[..., Pool], gate: jobs.StartGate, marks: str, eager: pytest.MonkeyPatch
) -> None:
    pool = _warm_pool(make_pool, gate)
    held, futures, ahead = _place(pool, gate, lambda: _marked(pool, marks, 8))
    answered = threading.Event()
    give_back = JobLine.give_back

    def note_answer(line: JobLine, jobs: Any) -> None:
        give_back(line, jobs)
        answered.set()

    eager.setattr(JobLine, "give_back", note_answer)
    victim = ahead[0][1]
    assert pool.kill(victim)
    assert victim.done()
    with pytest.raises(JobKilledError, match="before it started"):
        victim.result()
    # The recall is answered by the worker's watch thread while its job waits at the gate.
    assert answered.wait(WAIT), "the worker never answered the recall"
    dispatcher = _dispatcher(pool)
    states = dispatcher.call(lambda: {h.state for h in dispatcher.workers.handles})
    assert states == {WorkerState.BUSY}  # both still run their held job, nothing recalled
    _release_held(gate, held)
    others = [f for f in futures if f is not victim]
    assert [f.result(WAIT) for f in others] == [i for i, f in enumerate(futures) if f is not victim]
    assert sorted(jobs.runs_in(marks)) == sorted(str(f.result()) for f in others)


def test_terminate_resolves_jobs_waiting_in_pipes(
    make_pool: Callable[..., Pool], gate: jobs.StartGate, marks: str, eager: pytest.MonkeyPatch
) -> None:
    pool = _warm_pool(make_pool, gate)
    held, futures, ahead = _place(pool, gate, lambda: _marked(pool, marks, 12))
    assert sum(map(len, ahead)) == 2 * AHEAD_JOBS
    pool.terminate()
    done, _ = wait(held + futures, timeout=WAIT)
    assert done == set(held + futures)
    for future in held + [f for queue in ahead for f in queue]:
        with pytest.raises(JobKilledError):
            future.result()
    assert all(f.cancelled() for f in futures if f not in {g for q in ahead for g in q})
    assert jobs.runs_in(marks) == {}


def _spy_writes(monkeypatch: pytest.MonkeyPatch, fail_batches: bool = False) -> list[int]:
    """Record how many job messages each write to a worker carried; ``fail_batches``: every
    write of more than one message fails as a write to a dead worker's pipe does."""
    import pickle

    runs: list[int] = []
    write_frames = _handle.write_frames

    def spy(fd: int, messages: list[bytes]) -> None:
        # Only jobs whose function the worker holds are sent ahead: every message is a job's.
        count = sum(pickle.loads(data)[0] in (RUN_CALL, RUN_CHUNK) for data in messages)
        runs.append(count)
        if fail_batches and count > 1:
            raise BrokenPipeError(32, "Broken pipe")
        write_frames(fd, messages)

    monkeypatch.setattr(_handle, "write_frames", spy)
    return runs


def test_jobs_sent_ahead_to_one_worker_go_out_in_one_write(
    make_pool: Callable[..., Pool], gate: jobs.StartGate, marks: str, eager: pytest.MonkeyPatch
) -> None:
    pool = _warm_pool(make_pool, gate)
    runs = _spy_writes(eager)
    held, futures, ahead = _place(pool, gate, lambda: _marked(pool, marks, 2 * AHEAD_JOBS))
    assert sorted(map(len, ahead)) == [AHEAD_JOBS, AHEAD_JOBS]
    assert runs.count(AHEAD_JOBS) == 2, runs  # each worker's jobs in one write
    _release_held(gate, held)
    _assert_each_ran_once(futures, marks, 2 * AHEAD_JOBS)


def test_the_number_of_jobs_ahead_follows_the_workers_job_time() -> None:
    """Tiny jobs: up to MOST_AHEAD_JOBS, as many as fit in AHEAD_SECONDS of the worker's time;
    never fewer than AHEAD_JOBS (a first job, whose time is not known, included)."""
    tiny = _send_ahead.AHEAD_SECONDS / _send_ahead.MOST_AHEAD_JOBS
    assert _state.jobs_ahead_limit(0.0) == _send_ahead.MOST_AHEAD_JOBS
    assert _state.jobs_ahead_limit(tiny) == _send_ahead.MOST_AHEAD_JOBS
    assert _state.jobs_ahead_limit(_send_ahead.AHEAD_SECONDS / 10) == 10
    assert _state.jobs_ahead_limit(_send_ahead.AHEAD_SECONDS) == AHEAD_JOBS
    assert _state.jobs_ahead_limit(_send_ahead.SHORT_JOB_SECONDS * 0.99) == AHEAD_JOBS
    # Jobs of milliseconds (a map's chunks): one behind the running one, while it is young.
    assert _state.jobs_ahead_limit(_send_ahead.SHORT_JOB_SECONDS) == 1
    one = _send_ahead.ONE_AHEAD_SECONDS
    busy = WorkerState.BUSY
    assert _state.may_take_ahead(busy, 0, one * 0.9, one * 0.9)
    assert not _state.may_take_ahead(busy, 1, one * 0.9, 0.0)
    assert not _state.may_take_ahead(busy, 0, one * 0.9, one)
    assert not _state.may_take_ahead(busy, 0, one, 0.0)
    assert not _state.may_take_ahead(busy, 0, float("inf"), 0.0)  # no job time yet
    assert not _state.may_take_ahead(WorkerState.IDLE, 0, 0.0, 0.0)
    short = _send_ahead.SHORT_JOB_SECONDS
    assert _state.may_take_ahead(busy, AHEAD_JOBS - 1, short / 2, short * 0.9)
    assert not _state.may_take_ahead(busy, 0, short / 2, short)  # short jobs: young as before
    # Past the first AHEAD_JOBS only small jobs wait: the pipe never holds more than 44 KiB.
    big = _send_ahead.MAX_MORE_AHEAD_BYTES + 1
    assert _state.fits_ahead(big, True, AHEAD_JOBS - 1)
    assert not _state.fits_ahead(big, True, AHEAD_JOBS)
    assert _state.fits_ahead(_send_ahead.MAX_MORE_AHEAD_BYTES, True, AHEAD_JOBS)
    most = AHEAD_JOBS * _send_ahead.MAX_AHEAD_BYTES
    most += (_send_ahead.MOST_AHEAD_JOBS - AHEAD_JOBS) * _send_ahead.MAX_MORE_AHEAD_BYTES
    assert most <= 44 * 1024


def test_a_big_job_waits_only_where_the_socket_has_room_for_twice_its_bytes() -> None:
    huge = 100_000
    needed = 2 * huge + _send_ahead.AHEAD_MARGIN_BYTES
    assert not _state.fits_ahead(huge, True, 0)  # room unknown: small jobs only
    assert not _state.fits_ahead(huge, True, 0, lambda: None)
    assert _state.fits_ahead(huge, True, 0, lambda: needed)
    assert _state.fits_ahead(huge, True, AHEAD_JOBS, lambda: needed)
    assert not _state.fits_ahead(huge, True, 0, lambda: needed - 1)
    assert not _state.fits_ahead(huge, False, 0, lambda: 10 * needed)  # its function: not there

    def unasked() -> int:
        raise AssertionError("the socket is asked only for a job too big for the plain rule")

    assert _state.fits_ahead(_send_ahead.MAX_AHEAD_BYTES, True, 0, unasked)


@pytest.mark.parametrize("payload", [0, 2048], ids=["tiny", "2-KiB"])
def test_tiny_jobs_wait_sixteen_deep_and_bigger_ones_four(
    make_pool: Callable[..., Pool],
    gate: jobs.StartGate,
    marks: str,
    eager: pytest.MonkeyPatch,
    payload: int,
) -> None:
    """Workers whose jobs take microseconds (AHEAD_SECONDS raised, as if they did) are sent up
    to MOST_AHEAD_JOBS jobs each, in one write, unless the jobs are bigger than
    MAX_MORE_AHEAD_BYTES and the socket cannot say it has room for them (no ``outq``): then
    AHEAD_JOBS. Each runs once."""
    eager.setattr(_state, "AHEAD_SECONDS", 3600.0)
    pool = _warm_pool(make_pool, gate)
    runs = _spy_writes(eager)
    deep = AHEAD_JOBS if payload and not _platform.OUTQ else _send_ahead.MOST_AHEAD_JOBS
    n = 2 * _send_ahead.MOST_AHEAD_JOBS
    padding = b"x" * payload  # returned, so that it travels in the job's arguments

    held, futures, ahead = _place(
        pool, gate, lambda: [pool.submit(jobs.mark_run, marks, i, (i, padding)) for i in range(n)]
    )
    assert sorted(map(len, ahead)) == [deep, deep]
    assert runs.count(deep) == 2, runs  # each worker's jobs in one write
    _release_held(gate, held)
    assert [f.result(WAIT) for f in futures] == [(i, padding) for i in range(n)]
    assert sorted(jobs.runs_in(marks), key=int) == [str(i) for i in range(n)]


def test_a_recycled_worker_is_sent_ahead_only_the_jobs_it_will_run(
    make_pool: Callable[..., Pool],
    gate: jobs.StartGate,
    marks: str,
    eager: pytest.MonkeyPatch,
) -> None:
    """With ``max_jobs_per_worker``, a worker takes jobs ahead too, but never more than it
    runs before it is replaced: each worker here ran one job (warm) and runs a second (held),
    so 10 jobs per worker leave it room for 8 behind; all the rest run in its replacements,
    each job once and no process more than 10."""
    eager.setattr(_state, "AHEAD_SECONDS", 3600.0)  # room for 16, as for jobs of microseconds
    every = 10
    pool = _warm_pool(make_pool, gate, max_jobs_per_worker=every)
    n = 4 * _send_ahead.MOST_AHEAD_JOBS
    held, futures, ahead = _place(pool, gate, lambda: _marked(pool, marks, n))
    assert sorted(map(len, ahead)) == [every - 2, every - 2]
    _release_held(gate, held)
    _assert_each_ran_once(futures, marks, n)
    per_process = Counter(jobs.runs_in(marks).values())
    assert max(per_process.values()) <= every, per_process
    assert pool.stats().worker_restarts >= (2 + 2 + n) // every - 2


@pytest.mark.parametrize("leader", ["none", "hung", "crash"])
def test_big_jobs_wait_in_a_socket_with_room_and_lose_nothing(
    make_pool: Callable[..., Pool],
    gate: jobs.StartGate,
    marks: str,
    eager: pytest.MonkeyPatch,
    leader: str,
) -> None:
    """Jobs of 150 KB (whose results are as big: the worker writes while the parent would
    write to it) wait behind a running one where the socket can say it has room
    (``_platform.OUTQ``), as many as its send buffer takes at twice their bytes, never more;
    behind a job that hangs they are recalled and run elsewhere, behind one that crashes
    requeued. Each runs once, and nothing blocks. Without ``outq`` (portable mode) none
    waits."""
    eager.setattr(_state, "AHEAD_SECONDS", 3600.0)
    pool = _warm_pool(make_pool, gate)
    padding = b"x" * 150_000
    n = 12

    def queue_jobs() -> list[Future[Any]]:
        first = [] if leader == "none" else [_leader(pool, gate, leader)]
        return first + [pool.submit(jobs.mark_run, marks, i, (i, padding)) for i in range(n)]

    held, futures, ahead = _place(pool, gate, queue_jobs)
    big = set(futures[-n:])
    dispatcher = _dispatcher(pool)
    buffers = dispatcher.call(lambda: [h._send_buffer for h in dispatcher.workers.handles])
    waiting = [[f for f in queue if f in big] for queue in ahead]
    if not _platform.OUTQ:
        assert waiting == [[], []]
    else:
        assert any(waiting), buffers
        for queue, buffer in zip(waiting, buffers):
            # Each was let in with room for twice its bytes and a margin left.
            assert buffer is not None and len(queue) < buffer // len(padding), buffers
    if leader == "hung":
        eager.setattr(_state, "RECALL_AFTER_SECONDS", 0.01)
    _release_held(gate, held)
    assert [f.result(WAIT) for f in futures[-n:]] == [(i, padding) for i in range(n)]
    assert sorted(jobs.runs_in(marks), key=int) == [str(i) for i in range(n)]
    if leader == "crash":
        with pytest.raises(WorkerCrashedError):
            futures[0].result(WAIT)
    if leader == "hung":
        assert not futures[0].done()
        gate.release("hung")
        assert futures[0].result(WAIT) == "hung"


@pytest.mark.parametrize("leader", ["hung", "crash"])
def test_sixteen_jobs_behind_a_hung_or_crashed_job_run_elsewhere_once(
    make_pool: Callable[..., Pool],
    gate: jobs.StartGate,
    marks: str,
    eager: pytest.MonkeyPatch,
    leader: str,
) -> None:
    """The deepest pipes (MOST_AHEAD_JOBS behind a running job) lose nothing: the jobs behind
    one that hangs are recalled, those behind one that crashes are requeued; each runs once."""
    eager.setattr(_state, "AHEAD_SECONDS", 3600.0)
    pool = _warm_pool(make_pool, gate)
    n = 2 * _send_ahead.MOST_AHEAD_JOBS - 1

    def queue_jobs() -> list[Future[Any]]:
        return [_leader(pool, gate, leader), *_marked(pool, marks, n)]

    held, futures, ahead = _place(pool, gate, queue_jobs)
    first = futures[0]
    assert sorted(map(len, ahead)) == [_send_ahead.MOST_AHEAD_JOBS] * 2
    assert any(queue[0] is first for queue in ahead)
    eager.setattr(_state, "RECALL_AFTER_SECONDS", 0.01)
    _release_held(gate, held)
    _assert_each_ran_once(futures[1:], marks, n)
    if leader == "hung":
        assert not first.done()
        gate.release("hung")
        assert first.result(WAIT) == "hung"
    else:
        with pytest.raises(WorkerCrashedError):
            first.result(WAIT)


@pytest.mark.skipif(not _platform.MEMFD, reason="no shared-memory socket without memfd")
def test_a_job_through_shared_memory_waits_for_a_worker_that_lost_its_socket_to_be_idle(
    make_pool: Callable[..., Pool], gate: jobs.StartGate, eager: pytest.MonkeyPatch
) -> None:
    """Found by the fault campaign: a job whose buffers go through shared memory was sent ahead
    to a worker that an earlier job had left with its shared-memory socket closed; the send
    failed, the pool ended the worker, and the job it was running failed with it
    (``WorkerCrashedError``) for what another job did. Such a job is sent ahead only while the
    worker holds that socket (``test_large_data`` sends them ahead where it does)."""
    threshold = 64 * 1024
    pool = make_pool(BACKEND, 1, shared_memory_threshold=threshold)
    assert pool.submit(abs, -1).result(WAIT) == 1  # its job time known: it may take jobs ahead
    closed = pool.submit(hostile.close_worker_descriptor, "segment socket")
    assert closed.result(WAIT) == "segment socket"
    held = pool.submit(jobs.gate_job, gate.address, "held", "held")
    gate.wait_for("held")
    data = b"x" * (threshold + 1)
    large = pool.submit(jobs.identity, data)
    dispatcher = _dispatcher(pool)
    dispatcher.call(lambda: None)  # a whole turn of its loop, its send-ahead step included
    assert dispatcher.call(lambda: [len(h.ahead) for h in dispatcher.workers.handles]) == [0]
    gate.release("held")
    assert held.result(WAIT) == "held"
    try:  # sent to that worker once idle, it may fail: only it is at stake
        assert large.result(WAIT) == data
    except WorkerCrashedError:
        pass
    assert pool.submit(abs, -2).result(WAIT) == 2


def test_jobs_whose_write_together_fails_run_elsewhere_once(
    make_pool: Callable[..., Pool], gate: jobs.StartGate, marks: str, eager: pytest.MonkeyPatch
) -> None:
    """A worker whose pipe breaks as its jobs go out together is ended like one that died; the
    jobs it was sent run on the next workers, each once, and the job it ran fails alone."""
    pool = _warm_pool(make_pool, gate)
    runs = _spy_writes(eager, fail_batches=True)
    held = [pool.submit(jobs.gate_job, gate.address, f"a{i}", f"a{i}") for i in range(2)]
    gate.wait_for("a0")
    gate.wait_for("a1")
    futures = _marked(pool, marks, 2 * AHEAD_JOBS)
    dispatcher = _dispatcher(pool)
    dispatcher.call(lambda: None)
    dispatcher.call(lambda: None)  # a whole turn, its send-ahead step included: both fail
    assert runs.count(AHEAD_JOBS) >= 2, runs
    eager.setattr(_state, "SHORT_JOB_SECONDS", 0.0)  # the replacements take one job at a time
    eager.setattr(_state, "ONE_AHEAD_SECONDS", 0.0)
    for future in held:
        with pytest.raises(WorkerCrashedError):
            future.result(WAIT)
    _assert_each_ran_once(futures, marks, 2 * AHEAD_JOBS)
    assert pool.submit(jobs.square, 4).result(WAIT) == 16


def test_write_frames_sends_every_message_in_order_through_short_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``writev`` leaves out (a signal, a full pipe) follows in order, as one by one."""
    import os

    messages = [b"", b"x" * 5, b"y" * 70_000, b"z", b"w" * 3]
    writev = os.writev

    def short(fd: int, buffers: Any) -> int:
        return writev(fd, [bytes(b"".join(buffers))[:7]])

    for fake in (short, None):
        if fake is None:
            monkeypatch.setattr(_platform, "WRITEV", False)
        else:
            monkeypatch.setattr(os, "writev", fake)
        parent, child = socket.socketpair()
        with parent, child:
            reader = FrameReader(child.fileno())
            sender = threading.Thread(target=write_frames, args=(parent.fileno(), messages))
            sender.start()  # 70 KB: more than the socket holds before it is read
            got: list[bytes] = []
            while len(got) < len(messages):
                got += reader.read()
            join_or_fail(sender)
            assert got == messages


def test_short_jobs_queued_after_a_hung_one_finish_with_the_defaults(
    make_pool: Callable[..., Pool], gate: jobs.StartGate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default send-ahead rules, short jobs that went ahead behind a job that hangs are
    recalled and run elsewhere.

    The dispatcher sends ahead only to a worker whose running job started under
    ``SHORT_JOB_SECONDS`` (2 ms) ago, so a submitter holding the GIL (5 ms slices) usually keeps
    it from ever doing so behind the hung job. Holding the dispatcher while all the jobs are
    submitted makes it place the hung job and send ahead behind it in one turn. A turn still
    late by 2 ms (the machine is busy) sends nothing ahead; the test tries again then.
    """
    pool = make_pool(BACKEND, 2)
    assert list(pool.map(jobs.square, range(2000), chunksize=1, timeout=WAIT)) == [
        i * i for i in range(2000)
    ]
    dispatcher = _dispatcher(pool)
    behind: list[Future[Any]] = []  # futures sent ahead behind a hung job
    recalled: list[Future[Any]] = []  # hung jobs whose worker was asked to give jobs back
    run, recall = _handle.WorkerHandle.run, _handle.WorkerHandle.recall

    def noting_run(handle: _handle.WorkerHandle, job: Job) -> None:
        if handle.job is not None and handle.job.future in hung_jobs:
            behind.append(job.future)
        run(handle, job)

    def noting_recall(handle: _handle.WorkerHandle) -> None:
        if handle.job is not None:
            recalled.append(handle.job.future)
        recall(handle)

    monkeypatch.setattr(_handle.WorkerHandle, "run", noting_run)
    monkeypatch.setattr(_handle.WorkerHandle, "recall", noting_recall)
    hung_jobs: list[Future[Any]] = []
    for attempt in range(20):
        with dispatcher.lock:  # the dispatcher places all of these in its next turn
            hung = pool.submit(jobs.gate_job, gate.address, f"hung{attempt}", "hung")
            hung_jobs.append(hung)
            short = [pool.submit(jobs.square, i) for i in range(50)]
        assert [f.result(WAIT) for f in short] == [i * i for i in range(50)]
        assert not hung.done()
        if behind:
            break
        gate.release(f"hung{attempt}")
        assert hung.result(WAIT) == "hung"
    else:
        pytest.fail("in 20 tries the dispatcher never sent a job ahead behind the hung one")
    assert set(behind) <= set(short)  # ... and they finished while the hung job still runs
    assert recalled == [hung], "the jobs behind the hung job finished, but not by a recall"
    gate.release(f"hung{attempt}")
    assert hung.result(WAIT) == "hung"


# --- the worker's side of a recall --------------------------------------------------------------


def _message(*fields: Any) -> bytes:
    import pickle

    return pickle.dumps(fields)


def test_give_back_returns_only_unstarted_jobs_and_keeps_definitions() -> None:
    parent, child = socket.socketpair()
    with parent, child:
        inbox = _Inbox(child)  # type: ignore[arg-type]
        frames = [
            _message(RUN_CALL, 1, None, b"f", b"a"),
            _message(RUN_CALL, 2, None, b"f", b"a"),
            _message(DEFINE_FN, 7),
            b"raw function bytes",
            _message(RUN_CALL, 3, 7, None, b"a"),
            _message(RUN_CHUNK, 4, None, b"f", b"a"),
        ]
        for frame in frames:
            write_frame(parent.fileno(), frame)
        message, extra = inbox.next()
        assert message[:2] == (RUN_CALL, 1) and extra is None  # "started"
        assert inbox.give_back() == [2, 3, 4]
        write_frame(parent.fileno(), _message(STOP))
        assert inbox.next() == ((DEFINE_FN, 7), b"raw function bytes")
        assert inbox.next() == ((STOP,), None)


def test_give_back_while_the_main_thread_reads_returns_nothing() -> None:
    parent, child = socket.socketpair()
    with parent, child:
        inbox = _Inbox(child)  # type: ignore[arg-type]
        write_frame(parent.fileno(), _message(RUN_CALL, 1, None, b"f", b"a"))
        with inbox._lock:  # the main thread is inside next(): it runs what it reads
            assert inbox.give_back() == []
        assert inbox.next()[0][:2] == (RUN_CALL, 1)


def test_a_job_put_back_is_first_in_line() -> None:
    queue = JobQueue(max_pending=None)
    first, second = (Job(Call(print, (i,), {}), None) for i in range(2))
    queue.put(second)
    queue.put_back(first)
    assert queue.qsize() == 2
    assert queue.get_nowait() is first
    queue.put_back(first)
    assert queue.drain() == [first, second]
    assert queue.qsize() == 0


def test_give_back_with_a_definition_still_arriving() -> None:
    parent, child = socket.socketpair()
    with parent, child:
        inbox = _Inbox(child)  # type: ignore[arg-type]
        write_frame(parent.fileno(), _message(DEFINE_FN, 7))
        assert inbox.give_back() == []  # its function bytes are not here yet
        write_frame(parent.fileno(), b"raw function bytes")
        assert inbox.next() == ((DEFINE_FN, 7), b"raw function bytes")


class _Failed:
    """The ``Outcomes`` a ``Workers`` fails jobs through, recording what it was told."""

    def __init__(self) -> None:
        self.failed: list[tuple[Any, BaseException]] = []

    def fail(self, job: Any, error: BaseException) -> None:
        self.failed.append((job, error))


class _Requeued:
    def __init__(self) -> None:
        self.first: list[Any] = []

    def put_first(self, jobs: list[Any]) -> None:
        self.first.extend(jobs)


@pytest.mark.parametrize("terminating", [True, False], ids=["terminate", "kill"])
def test_the_job_a_killed_worker_had_started_fails_for_what_it_was_killed_for(
    terminating: bool,
) -> None:
    """A worker killed for one job may reply to it before it dies: it had started the job sent
    behind it. Under ``terminate()`` that job fails as terminated, like every other (the fault
    campaign saw it fail as ``WorkerCrashedError``, outside what a terminated job may end as);
    otherwise it fails saying why its worker died, and the jobs it had not started run again.
    The moment cannot be made to happen on demand in a real pool (the reply must come between
    the kill and the exit), so the worker's bookkeeping is driven directly."""
    from types import SimpleNamespace

    from jobpool._process import _workers

    workers = _workers.Workers.__new__(_workers.Workers)
    outcomes, line = _Failed(), _Requeued()
    workers._outcomes = outcomes  # type: ignore[assignment]
    workers._line = line  # type: ignore[assignment]
    workers.terminating, workers.broken = terminating, None
    handle = SimpleNamespace(pid=4321, replied_after_kill=True)
    started, unstarted = (SimpleNamespace(future=SimpleNamespace(resolved=False)) for _ in "ab")
    workers._requeue_unstarted(handle, -9, [started, unstarted])  # type: ignore[arg-type]
    if terminating:
        assert [job for job, _ in outcomes.failed] == [started, unstarted] and not line.first
        for _, error in outcomes.failed:
            assert isinstance(error, JobKilledError) and "terminated" in str(error)
    else:
        ((job, error),) = outcomes.failed
        assert job is started and line.first == [unstarted]
        assert isinstance(error, WorkerCrashedError) and error.detail == _workers.STARTED_AFTER
