"""Large buffers travel through shared memory (``_process/_large_data.py``), and never leak.

Round trips of every buffer kind on every start method; what a worker and the caller may do
with what they get; and, after each way a job can end (normal, raised, crashed, timed out,
killed, cancelled, refused by a full queue, terminated, parent SIGKILLed), that no process of
the test's family still holds a segment: neither a descriptor (``/proc/<pid>/fd``) nor a
mapping (``/proc/<pid>/maps``). Segments are memfds named ``jobpool``, so nothing of jobpool's
is in ``/dev/shm``; no process of the family may hold a ``multiprocessing.shared_memory`` block
there either (checked per process: other programs on the machine use ``/dev/shm`` meanwhile).

Every test uses ``bytes``/``bytearray``/``memoryview``; the numpy ones numpy arrays too (numpy is
in the ``test`` extra: without it the run fails at start, see conftest.py).
"""

from __future__ import annotations

import array
import itertools
import os
import pickle
import signal
import subprocess
import sys
import time
from concurrent.futures import CancelledError
from typing import Any

import numpy
import pytest

import jobs
from conftest import START_METHODS, WAIT, MakePool
from jobpool import (
    JobKilledError,
    JobTimeoutError,
    Pool,
    QueueFull,
    SerializationError,
    WorkerCrashedError,
    _platform,
)
from jobpool._process import _large_data, _named_memory, _shared_memory
from jobpool._process._out_of_band import loads, pickle_payload
from proctree import descendants, reap, subreaper, wait_exited

pytestmark = pytest.mark.skipif(
    _large_data.large_data(1, False) is None, reason="no shared memory here (memfd or files)"
)

MB = 1 << 20
SIZE = 2 * MB  # over the default threshold (1 MiB)
MARK = "/memfd:jobpool"
# Without memfd (JOBPOOL_PORTABLE=1): named files in a directory per process (_named_memory).
NAMED = os.path.join(_named_memory.base_directory(), _named_memory.PREFIX)


def _is_segment(path: str) -> bool:
    """A jobpool segment (a memfd, or a file of a jobpool directory, not its lock), or a
    ``multiprocessing.shared_memory`` block (``/dev/shm/psm_*``), which jobpool must never need.
    multiprocessing's own semaphores and heap arenas (``sem.*``, ``pym-*``, from the tests'
    gates) are not segments."""
    if path.startswith(NAMED):
        return not path.removesuffix(" (deleted)").endswith(_named_memory.LOCK_SUFFIX)
    return path.startswith((MARK, "/dev/shm/psm_"))


def named_files(pids: set[int]) -> dict[str, list[str]]:
    """The named segments still in the directories of the processes ``pids``, and the
    directories of dead owners, by directory: what nobody unlinked."""
    base = _named_memory.base_directory()
    found: dict[str, list[str]] = {}
    for name in os.listdir(base):
        owner = name[len(_named_memory.PREFIX) :].split("-")[0]
        if name.startswith(_named_memory.PREFIX) and owner.isdigit() and int(owner) in pids:
            path = os.path.join(base, name)
            found[name] = sorted(os.listdir(path)) if os.path.isdir(path) else []
    return found


# --- where segments are held ---------------------------------------------------------------------


def held_segments() -> dict[int, int]:
    """Segment descriptors plus mappings, per process of this test run that holds any."""
    held: dict[int, int] = {}
    for pid in [os.getpid(), *descendants(os.getpid())]:
        count = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    count += _is_segment(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except OSError:  # closed meanwhile
                    pass
            with open(f"/proc/{pid}/maps") as f:
                count += sum(_is_segment(line.split(maxsplit=5)[-1]) for line in f)
        except OSError:  # the process is gone
            continue
        if count:
            held[pid] = count
    return held


def left_files() -> dict[str, list[str]]:
    """Files in this test run's named-segment directories (the directories themselves stay)."""
    family = {os.getpid(), *descendants(os.getpid())}
    return {name: files for name, files in named_files(family).items() if files}


def wait_until_freed(seconds: float = 15.0) -> None:
    """Every segment gone within ``seconds`` (a worker may still be letting go of a failed
    job's, or exiting), and no named segment left: a ceiling, reached only when something
    leaked."""
    deadline = time.monotonic() + seconds
    while held_segments() or left_files():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"shared-memory segments still held: {held_segments()}, named: {left_files()}"
            )
        time.sleep(0.005)


@pytest.fixture(autouse=True)
def no_segments_left() -> Any:
    """Each test ends with no segment held by any process of the test run."""
    yield
    wait_until_freed()


# --- round trips ---------------------------------------------------------------------------------


def _buffer_kinds() -> list[Any]:
    data = jobs.bytes_of(SIZE)
    doubles = array.array("d", range(SIZE // 8))
    return [
        data,
        bytearray(data),
        memoryview(data),
        memoryview(doubles),  # format "d"
        memoryview(bytearray(data)).cast("B", (SIZE // 1024, 1024)),  # two dimensions
        memoryview(data)[::2],  # not contiguous: made contiguous once
        memoryview(b"small"),  # below the threshold: memoryview pickles all the same
    ]


def _assert_same(got: Any, sent: Any) -> None:
    assert type(got) is type(sent)
    if isinstance(sent, memoryview):
        assert (got.format, got.shape) == (sent.format, sent.shape)
        assert got.tobytes() == sent.tobytes()
    else:
        assert got == sent


@pytest.mark.parametrize("start_method", START_METHODS)
def test_every_buffer_kind_goes_and_comes_back(make_pool: MakePool, start_method: str) -> None:
    pool = make_pool(f"process-{start_method}")
    kinds = _buffer_kinds()
    for sent, got in zip(kinds, [pool.submit(jobs.identity, k) for k in kinds]):
        _assert_same(got.result(WAIT), sent)
    nested = {"a": kinds[:3], "b": (kinds[0], kinds[1])}
    assert pool.submit(jobs.identity, nested).result(WAIT) == nested
    assert list(pool.map(jobs.identity, kinds[:2], timeout=WAIT)) == kinds[:2]
    assert pool.submit(jobs.echo_kwargs, data=kinds[0]).result(WAIT) == ((), {"data": kinds[0]})


@pytest.mark.parametrize("start_method", START_METHODS)
def test_numpy_arrays_of_every_layout_go_and_come_back(
    make_pool: MakePool, start_method: str
) -> None:
    pool = make_pool(f"process-{start_method}")
    base = numpy.arange(SIZE // 4, dtype=numpy.float64).reshape(256, -1)
    arrays = [
        base,
        numpy.asfortranarray(base),
        base[::2, 1::3],  # a view with steps: pickled in band by numpy itself
        base[10:200],  # a contiguous slice
        base.T,
        base.astype(numpy.int32),
        base.astype(numpy.complex64),
        numpy.zeros(SIZE, dtype=numpy.bool_),
        numpy.frombuffer(jobs.bytes_of(SIZE), dtype=numpy.uint8),  # read-only to begin with
        numpy.zeros(4, dtype=[("x", "f8"), ("y", "i4")]).repeat(SIZE // 48),  # structured
        numpy.arange(10.0),  # small: through the pipe
    ]
    futures = [pool.submit(jobs.identity, a) for a in arrays]
    for sent, future in zip(arrays, futures):
        got = future.result(WAIT)
        assert got.dtype == sent.dtype and got.shape == sent.shape
        assert numpy.array_equal(got, sent)
    items = list(pool.map(jobs.identity, [base, base[::3]], timeout=WAIT))
    assert numpy.array_equal(items[0], base) and numpy.array_equal(items[1], base[::3])


@pytest.mark.parametrize("start_method", START_METHODS)
def test_results_are_the_callers_own_writable_objects_after_shutdown(
    start_method: str,
) -> None:
    with Pool(2, backend="process", start_method=start_method) as pool:
        made = pool.submit(jobs.ones_array, SIZE // 8).result(WAIT)
        argument = numpy.arange(SIZE // 8, dtype=numpy.float64)
        echoed = pool.submit(jobs.identity, argument).result(WAIT)  # read-only in the worker
        view = pool.submit(jobs.identity, memoryview(bytearray(SIZE))).result(WAIT)
        data = pool.submit(jobs.bytes_of, SIZE, "bytearray").result(WAIT)
    if _platform.MEMFD:  # named segments' results are copied in as they arrive
        assert held_segments(), "the results should be mapped from shared memory"
    assert made.flags.writeable and echoed.flags.writeable
    made[0] = echoed[0] = -1.0
    assert made[0] == echoed[0] == -1.0 and made[1] == echoed[1] == 1.0
    assert numpy.array_equal(echoed[1:], argument[1:]) and argument[0] == 0.0
    assert not view.readonly
    view[0] = 9
    data[0] = 9
    assert view[0] == 9 and data[0] == 9
    del made, echoed, view, data  # no garbage collection needed: the mappings go with them
    assert not held_segments()


# --- what a worker may do with its arguments -----------------------------------------------------


def test_workers_see_large_arguments_read_only(make_pool: MakePool) -> None:
    pool = make_pool("process-forkserver")
    big = numpy.zeros(SIZE // 8)
    assert pool.submit(jobs.describe, big).result(WAIT) == ("ndarray", False)
    assert pool.submit(jobs.describe, memoryview(bytearray(SIZE))).result(WAIT) == (
        "memoryview",
        False,
    )
    with pytest.raises(ValueError, match="read-only"):
        pool.submit(jobs.write_first, big).result(WAIT)
    # Below the threshold the job gets its own copy through the pipe, as before.
    assert pool.submit(jobs.describe, numpy.zeros(16)).result(WAIT) == ("ndarray", True)
    # bytearray arguments are rebuilt as bytearrays: always the job's own.
    assert pool.submit(jobs.write_first, bytearray(SIZE)).result(WAIT)[0] == 7


def test_writable_arguments_copy_on_write(make_pool: MakePool) -> None:
    pool = make_pool("process-forkserver", writable_arguments=True)
    big = numpy.zeros(SIZE // 8)
    assert pool.submit(jobs.describe, big).result(WAIT) == ("ndarray", True)
    changed = pool.submit(jobs.write_first, big).result(WAIT)
    assert changed[0] == 7 and changed[1] == 0
    assert big[0] == 0, "the caller's array must not change"
    view = pool.submit(jobs.write_first, memoryview(bytearray(SIZE))).result(WAIT)
    assert view[0] == 7


def test_threshold_decides_and_none_turns_it_off(make_pool: MakePool, gate: Any) -> None:
    data = jobs.bytes_of(SIZE)
    low = make_pool("process-forkserver", shared_memory_threshold=1024)
    off = make_pool("process-forkserver", shared_memory_threshold=None)
    high = make_pool("process-forkserver", shared_memory_threshold=4 * SIZE)
    for name, pool, expected in (("low", low, True), ("off", off, False), ("high", high, False)):
        future = pool.submit(jobs.gate_then_return, gate.address, name, data)
        gate.wait_for(name)
        # The caller holds the argument's segment until the job resolves.
        assert bool(held_segments().get(os.getpid())) is expected, name
        gate.release(name)
        assert future.result(WAIT) == SIZE
    assert low.submit(jobs.segments_mapped_here, memoryview(bytes(2048))).result(WAIT) == 1


def test_bad_options_are_refused_with_the_fix() -> None:
    with pytest.raises(TypeError, match="shared_memory_threshold must be an int"):
        Pool(1, backend="process", shared_memory_threshold="1MB")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shared_memory_threshold must be at least 1"):
        Pool(1, backend="process", shared_memory_threshold=0)
    with pytest.raises(TypeError, match="writable_arguments must be True or False"):
        Pool(1, backend="process", writable_arguments=1)  # type: ignore[arg-type]


def test_the_thread_backend_copies_nothing(make_pool: MakePool) -> None:
    pool = make_pool("thread", shared_memory_threshold=1024)
    data = bytearray(SIZE)
    assert pool.submit(jobs.identity, data).result(WAIT) is data


def test_an_unpicklable_argument_is_still_named(make_pool: MakePool) -> None:
    pool = make_pool("process-forkserver")
    with pytest.raises(SerializationError, match=r"args\[1\]"):
        pool.submit(jobs.identity, jobs.bytes_of(SIZE), jobs.return_lock())


def test_without_a_segment_the_pipe_takes_over(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_pool("process-forkserver")

    def out_of_descriptors(*_: Any) -> int:
        raise OSError(24, "Too many open files")

    if _platform.MEMFD:
        monkeypatch.setattr(os, "memfd_create", out_of_descriptors)
    else:
        monkeypatch.setattr(_named_memory, "_create", out_of_descriptors)
    data = jobs.bytes_of(SIZE)
    assert pool.submit(jobs.identity, data).result(WAIT) == data
    assert pool.submit(jobs.identity, memoryview(data)).result(WAIT).tobytes() == data


# --- lifetime: nothing left after any ending -----------------------------------------------------


def test_segments_are_freed_after_normal_and_failed_jobs(make_pool: MakePool) -> None:
    pool = make_pool("process-forkserver")
    data = jobs.bytes_of(SIZE)
    results = [pool.submit(jobs.identity, bytearray(data)) for _ in range(6)]
    assert all(f.result(WAIT) == data for f in results)
    del results
    with pytest.raises(TypeError):
        pool.submit(jobs.write_first, data).result(WAIT)  # bytes do not support assignment
    wait_until_freed()


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_worker_killed_holding_a_large_argument_frees_it(
    make_pool: MakePool, gate: Any, start_method: str
) -> None:
    pool = make_pool(f"process-{start_method}")
    future = pool.submit(jobs.gate_then_die, gate.address, "die", jobs.bytes_of(SIZE))
    pid = gate.wait_for("die")
    assert held_segments().get(os.getpid()), "the caller holds the segment while the job runs"
    gate.release("die")
    with pytest.raises(WorkerCrashedError):
        future.result(WAIT)
    assert not wait_exited({pid}, WAIT)
    wait_until_freed()
    assert pool.submit(jobs.identity, jobs.bytes_of(SIZE)).result(WAIT) == jobs.bytes_of(SIZE)


def test_timeout_and_kill_free_the_segment(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool("process-forkserver")
    slow = pool.options(timeout=0.2).submit(
        jobs.gate_then_return, gate.address, "slow", jobs.bytes_of(SIZE)
    )
    killed = pool.submit(jobs.gate_then_return, gate.address, "killed", jobs.bytes_of(SIZE))
    gate.wait_for("slow")
    gate.wait_for("killed")
    assert pool.kill(killed)
    with pytest.raises(JobTimeoutError):
        slow.result(WAIT)
    with pytest.raises(JobKilledError):
        killed.result(WAIT)
    wait_until_freed()


def test_cancelled_and_refused_jobs_free_their_segments(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool("process-forkserver", workers=1, max_pending=1)
    running = pool.submit(jobs.gate_then_return, gate.address, "run", jobs.bytes_of(SIZE))
    gate.wait_for("run")
    queued = pool.submit(jobs.identity, jobs.bytes_of(SIZE))
    with pytest.raises(QueueFull):
        pool.submit_nowait(jobs.identity, jobs.bytes_of(SIZE))
    # max_pending bounds the memory too: the running job's and the queued job's segments only.
    assert held_segments() == {os.getpid(): 2}
    assert queued.cancel()
    with pytest.raises(CancelledError):
        queued.result(0)
    gate.release("run")
    assert running.result(WAIT) == SIZE
    wait_until_freed()


def test_terminate_frees_running_and_queued_segments(make_pool: MakePool, gate: Any) -> None:
    pool = make_pool("process-forkserver", workers=1)
    running = pool.submit(jobs.gate_then_return, gate.address, "run", jobs.bytes_of(SIZE))
    gate.wait_for("run")
    queued = [pool.submit(jobs.identity, jobs.bytes_of(SIZE)) for _ in range(3)]
    pool.terminate()
    for future in [running, *queued]:
        with pytest.raises((JobKilledError, CancelledError)):
            future.result(WAIT)
    wait_until_freed()


def test_jobs_sent_ahead_and_given_back_keep_then_free_their_segments(
    make_pool: MakePool, gate: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobpool._process import _state

    pool = make_pool("process-forkserver", workers=2, shared_memory_threshold=1024)
    # Both workers ready, each holding a job at once (none is sent ahead yet: no job time known).
    warm = [pool.submit(jobs.gate_job, gate.address, f"warm{i}", i) for i in range(2)]
    assert gate.wait_for("warm0") != gate.wait_for("warm1")
    gate.release("warm0")
    gate.release("warm1")
    assert [f.result(WAIT) for f in warm] == [0, 1]
    monkeypatch.setattr(_state, "SHORT_JOB_SECONDS", 3600.0)  # send ahead to any busy worker
    monkeypatch.setattr(_state, "ONE_AHEAD_SECONDS", 3600.0)
    monkeypatch.setattr(_state, "RECALL_AFTER_SECONDS", 3600.0)  # ... recalling only later
    held = [pool.submit(jobs.gate_job, gate.address, f"hold{i}") for i in range(2)]
    gate.wait_for("hold0")
    gate.wait_for("hold1")
    behind = [pool.submit(jobs.identity, jobs.bytes_of(4096)) for _ in range(8)]
    dispatcher = pool._backend._dispatcher  # type: ignore[attr-defined]
    dispatcher.call(lambda: None)  # one turn of its loop sends jobs ahead
    assert dispatcher.call(lambda: sum(len(h.ahead) for h in dispatcher.workers.handles)) > 0
    monkeypatch.setattr(_state, "RECALL_AFTER_SECONDS", 0.01)  # ... and recalls them
    dispatcher.wake()
    gate.release("hold0")  # one worker frees up; the other keeps holding
    assert all(f.result(WAIT) == jobs.bytes_of(4096) for f in behind)
    gate.release("hold1")
    for future in held:
        future.result(WAIT)
    # The worker that gave jobs back took their descriptors off its socket: the next ones it
    # receives are its own jobs' (a stale one would fail the job as out of step).
    again = [pool.submit(jobs.identity, jobs.bytes_of(4096)) for _ in range(8)]
    assert all(f.result(WAIT) == jobs.bytes_of(4096) for f in again)
    wait_until_freed()


CHILD = """
import sys
sys.path.insert(0, {tests!r})
import jobs
from jobpool import Pool

if __name__ == "__main__":
    pool = Pool(2, backend="process", start_method={method!r})
    data = memoryview(jobs.bytes_of({size}))  # mapped by the worker while the job runs
    running = [pool.submit(jobs.gate_then_return, {gate!r}, i, data) for i in range(2)]
    queued = [pool.submit(jobs.identity, data) for _ in range(3)]
    print("READY", flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize("method", ["forkserver", "fork"])
def test_nothing_is_left_when_the_parent_is_killed(gate: Any, method: str) -> None:
    tests = os.path.dirname(os.path.abspath(__file__))
    script = CHILD.format(tests=tests, method=method, size=SIZE, gate=gate.address)
    with subreaper():
        child = subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        family: set[int] = set()
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"READY\n", child.stderr
            workers = {gate.wait_for(0), gate.wait_for(1)}
            family = descendants(child.pid)
            holders = held_segments()
            assert child.pid in holders and workers <= set(holders), holders
            child.kill()
            child.wait(WAIT)
            assert not wait_exited(workers, WAIT)
        finally:
            family |= descendants(child.pid)
            if child.poll() is None:
                child.kill()
            child.communicate(timeout=WAIT)
            leftovers = reap(family)
        assert not leftovers, f"processes still there: {leftovers}"


def test_no_resource_tracker_warning(tmp_path: Any) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "import jobs\n"
        "from jobpool import Pool\n"
        "if __name__ == '__main__':\n"
        "    with Pool(2, backend='process') as pool:\n"
        f"        data = jobs.bytes_of({SIZE})\n"
        "        assert all(f.result() == data for f in\n"
        "                   [pool.submit(jobs.identity, data) for _ in range(4)])\n"
        "    print('done')\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    assert "resource_tracker" not in done.stderr and "leaked" not in done.stderr, done.stderr


# --- the pickling, in this process ---------------------------------------------------------------


def _round_trip(value: Any, threshold: int = 1024) -> tuple[Any, int]:
    """``value`` through pickle_payload + a segment + loads, as a result; and its buffer count."""
    stream, views = pickle_payload(value, "value", threshold)
    if not views:
        return loads(stream, None, [], True), 0
    outgoing = _new_segment(views)
    try:
        if _platform.MEMFD:
            mapped = _shared_memory.map_segment(outgoing.segment.fd, outgoing.segment.size, True)
        else:  # as the parent receives a result: opened by name, unlinked, copied in
            path = outgoing.segment.path
            outgoing.handed_over()
            mapped = _named_memory._open_and_unlink(path, outgoing.segment.size, True).map(True)
    finally:
        outgoing.segment.close()
    return loads(stream, mapped, outgoing.spans, True), len(views)


def test_small_payloads_keep_the_plain_pickle() -> None:
    stream, views = pickle_payload((jobs.square, (3,), {}), "job", MB)
    assert views == [] and stream == pickle.dumps((jobs.square, (3,), {}), 5)


def test_each_large_buffer_goes_out_of_band_once() -> None:
    data = jobs.bytes_of(8192)
    value = [data, bytearray(data), memoryview(data), b"tiny", data]
    got, buffers = _round_trip(value)
    assert got == value and type(got[1]) is bytearray
    assert buffers == 3  # the same bytes object twice is pickled once (memo)


def test_closures_and_main_objects_take_the_cloudpickle_path() -> None:
    data = jobs.bytes_of(8192)
    got, buffers = _round_trip((lambda: 3, data))
    assert got[0]() == 3 and got[1] == data and buffers == 1


@pytest.mark.linux_only("memfd")
def test_a_rejected_descriptor_message_fails_only_its_job() -> None:
    left, right = _shared_memory.socket_pair()
    try:
        _shared_memory.send_fd(left, 1, None)
        incoming = _large_data.receive(right, 2, (b"", [], 0))  # expects job 2, gets 1
        with pytest.raises(OSError, match="out of step"):
            incoming.load(True)
        nothing = _large_data.receive(right, 3, (b"", [], 0))  # nothing was sent at all
        with pytest.raises(OSError):
            nothing.load(True)
    finally:
        left.close()
        right.close()


_made = itertools.count()


def _new_segment(views: list[memoryview]) -> _large_data.Outgoing:
    """A segment as the parent makes one here: a memfd, or a file of this process's directory."""
    if _platform.MEMFD:
        return _large_data._outgoing(views)
    path = os.path.join(_named_memory.own_directory().path, f"test{next(_made)}")
    return _large_data._outgoing(views, path)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX")
def test_a_forked_child_closes_inherited_segments() -> None:
    segment = _new_segment([memoryview(b"x" * 100)]).segment
    fd = segment.fd
    try:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.fstat(fd)
                os.write(write, b"open")
            except OSError:
                os.write(write, b"closed")
            os._exit(0)
        os.close(write)
        assert os.read(read, 16) == b"closed"
        os.close(read)
        os.waitpid(pid, 0)
        path = getattr(segment, "path", None)
        assert path is None or os.path.exists(path), "the child unlinked the parent's segment"
    finally:
        segment.close()


def test_a_refused_job_tried_again_through_the_pipe_leaves_its_old_segment(
    make_pool: MakePool, gate: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncio's ``run`` tries a job the full queue refused again, in the pool's helper thread,
    and the second try prepares it anew. Its first segment was closed at the refusal; when the
    second try's buffers go through the pipe (the descriptor budget is spent by then), that
    closed segment must not travel with the job."""
    import asyncio
    import threading

    pool = make_pool("process-forkserver", workers=1, max_pending=1, shared_memory_threshold=1024)
    held = pool.submit(jobs.gate_job, gate.address, "hold")
    gate.wait_for("hold")
    queued = pool.submit(abs, -1)  # the queue is full
    answers: list[bool] = []
    tried_again = threading.Event()

    def budget() -> bool:
        """The first try gets a segment; the second finds the budget spent."""
        answers.append(not answers)
        if len(answers) == 2:
            tried_again.set()
        return answers[-1]

    monkeypatch.setattr(_shared_memory, "may_hold_another", budget)

    async def run_it() -> Any:
        task = asyncio.ensure_future(pool.run(jobs.identity, jobs.bytes_of(4096)))
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, tried_again.wait, WAIT)  # blocked on the slot
        gate.release("hold")
        return await asyncio.wait_for(task, WAIT)

    assert asyncio.run(run_it()) == jobs.bytes_of(4096)
    assert held.result(WAIT) is None and queued.result(WAIT) == 1
