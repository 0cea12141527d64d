"""Hostile jobs and hostile callers (issue 23): each reproduction as the issue wrote it.

Jobs that fork and return, write out of turn on the worker's pipe, leave threads behind; a
dispatcher that dies anyway; a pool used in a forked child; descriptors running out; a thread a
job left changing a result after it arrived; ``pool.kill()`` of a future the pool never made.
Each runs on fork, forkserver and spawn (and threads where it applies); every wait has a
deadline. Scenarios that fork the caller or lower its descriptor limit run in a child
interpreter, started with a deadline, so this test process is never the one that suffers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

import hostile
import jobpool
import jobs
from conftest import START_METHODS, WAIT
from jobpool import InitializerError, Pool, SerializationError, WorkerCrashedError, _platform
from jobs import StartGate

MakePool = Callable[..., Pool]
PROCESS = [f"process-{method}" for method in START_METHODS]
LINUX = sys.platform.startswith("linux")
TESTS = Path(__file__).resolve().parent
SOURCE = Path(jobpool.__file__).resolve().parent.parent  # the jobpool this test runs


def wait_gone(pid: int) -> None:
    """Wait (with a deadline) until process ``pid``, not a child of ours, has exited."""
    from proctree import wait_exited

    assert not wait_exited({pid}, WAIT), f"process {pid} still runs after {WAIT} s"


# --- 1. a job that forks and returns ------------------------------------------------------------


@pytest.mark.skipif(not LINUX, reason="waits for the forked copy through /proc")
@pytest.mark.parametrize("backend", PROCESS)
def test_job_that_forks_and_returns(make_pool: MakePool, backend: str) -> None:
    """Issue 23, item 1: the forked copy of the worker never serves the pipe."""
    pool = make_pool(backend, workers=2)
    copy = pool.submit(hostile.fork_and_return).result(WAIT)
    assert copy > 0  # the worker's own reply: the copy's pid
    wait_gone(copy)  # the copy came back into the worker's loop and ended there
    assert pool.submit(abs, -5).result(WAIT) == 5
    assert [pool.submit(abs, -i).result(WAIT) for i in range(20)] == list(range(20))
    stats = pool.stats()
    assert stats.worker_restarts == 0 and stats.failed == 0


@pytest.mark.parametrize("backend", PROCESS)
def test_a_job_that_raises_with_no_descriptor_free_fails_alone(
    make_pool: MakePool, backend: str
) -> None:
    """Formatting its traceback needed a descriptor (a source file, a module import on 3.13):
    the OSError escaped, the worker died, and the next job's future was blamed."""
    pool = make_pool(backend, workers=1)
    pid = pool.submit(os.getpid).result(WAIT)
    exc = pool.submit(hostile.raise_with_no_descriptor_free, "no descriptor left").exception(WAIT)
    assert isinstance(exc, ValueError) and str(exc) == "no descriptor left", repr(exc)
    assert "raise_with_no_descriptor_free" in exc.__cause__.tb  # type: ignore[union-attr]
    assert pool.submit(os.getpid).result(WAIT) == pid  # the same worker goes on
    assert pool.submit(hostile.release_descriptors).result(WAIT) > 0
    assert pool.stats().worker_restarts == 0


@pytest.mark.parametrize("backend", PROCESS)
def test_an_unpicklable_result_with_no_descriptor_free_fails_alone(
    make_pool: MakePool, backend: str
) -> None:
    """Found by the fault campaign: in a worker a job had left without descriptors, a map item
    whose result cannot be pickled killed the worker (exit code 1), the map saw a
    WorkerCrashedError: explaining the failure imported a module, which needs a descriptor to
    open its file. The item fails with its SerializationError, the others come back, and the
    worker goes on."""
    pool = make_pool(backend, workers=1)
    pid = pool.submit(os.getpid).result(WAIT)
    assert pool.submit(jobs.lock_at, 0, 3).result(WAIT) == 0  # its module imported, while it can
    assert pool.submit(hostile.take_descriptors).result(WAIT) > 0
    results = pool.map(jobs.lock_at, range(6), [3] * 6, chunksize=3, timeout=WAIT)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(SerializationError, match="lock"):
        next(results)
    exc = pool.submit(jobs.lock_at, 3, 3).exception(WAIT)
    assert isinstance(exc, SerializationError) and "lock" in str(exc), repr(exc)
    assert pool.submit(os.getpid).result(WAIT) == pid  # the same worker goes on
    assert pool.submit(hostile.release_descriptors).result(WAIT) > 0
    assert pool.stats().worker_restarts == 0


@pytest.mark.parametrize("backend", PROCESS)
@pytest.mark.parametrize(("what", "status"), [("return", 0), ("raise", 1), ("exit", 7)])
def test_forked_copy_ends_as_a_program_would(
    make_pool: MakePool, backend: str, what: str, status: int
) -> None:
    """A copy that returned ends with 0, one that raised with 1, ``sys.exit(7)`` with 7; the
    worker's job waits for it and gets that status."""
    pool = make_pool(backend, workers=1)
    assert pool.submit(hostile.fork_child_does, what).result(WAIT) == status
    assert pool.submit(abs, -3).result(WAIT) == 3
    assert pool.stats().worker_restarts == 0


@pytest.mark.parametrize("backend", PROCESS)
def test_jobs_that_fork_and_exec_or_exit_still_work(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend, workers=1)
    assert pool.submit(hostile.fork_and_exit_hard, 5).result(WAIT) == 5
    program = [sys.executable, "-c", "import sys; sys.exit(4)"]
    assert pool.submit(subprocess.call, program).result(WAIT) == 4
    assert pool.submit(abs, -3).result(WAIT) == 3
    assert pool.stats().worker_restarts == 0


@pytest.mark.parametrize("backend", PROCESS)
def test_forked_copy_sends_no_shared_memory(make_pool: MakePool, backend: str) -> None:
    """Both copies return a large result; only the worker's reaches the caller, and the
    descriptor channel stays in step for the results after it."""
    pool = make_pool(backend, workers=1)
    size = 2 << 20
    assert pool.submit(hostile.fork_and_return_large, size).result(WAIT) == b"w" * size
    assert pool.submit(bytes, size).result(WAIT) == bytes(size)
    assert pool.stats().worker_restarts == 0


@pytest.mark.parametrize("backend", PROCESS)
def test_map_item_that_forks(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend, workers=2)
    assert list(pool.map(hostile.fork_in_map_item, range(8), chunksize=4)) == list(range(8))
    assert pool.stats().worker_restarts == 0


# --- 2. anything a worker sends out of turn is that worker's crash --------------------------------

OUT_OF_TURN = [
    "garbage",
    "unpicklable",
    "unknown-tag",
    "foreign-job",
    "ready-again",
    "not-a-tuple",
    "bad-log",
    "init-failed",
]


@pytest.mark.parametrize("backend", PROCESS)
@pytest.mark.parametrize("what", OUT_OF_TURN)
def test_out_of_turn_message_is_the_workers_crash(
    make_pool: MakePool, backend: str, what: str
) -> None:
    pool = make_pool(backend, workers=2)
    first = pool.submit(os.getpid).result(WAIT)
    with pytest.raises(WorkerCrashedError, match="breaks the protocol") as info:
        pool.submit(hostile.send_on_own_pipe, what).result(WAIT)
    assert info.value.pid is not None
    # The pool goes on: every later job runs, on a replacement.
    assert [pool.submit(abs, -i).result(WAIT) for i in range(10)] == list(range(10))
    assert pool.submit(abs, -5).result(WAIT) == 5
    stats = pool.stats()
    # One job at a time needs one worker: a pool that grows as jobs wait (not fork) has one.
    assert stats.worker_restarts == 1 and 1 <= stats.workers <= 2
    assert first > 0


@pytest.mark.parametrize("backend", PROCESS)
def test_second_reply_is_the_workers_crash(make_pool: MakePool, backend: str) -> None:
    """The job sends its own reply first; the worker's is then a second reply for that job."""
    pool = make_pool(backend, workers=1)
    future = pool.submit(hostile.reply_twice, 42)
    assert future.result(WAIT) == 42  # the first reply settled it
    # The worker's own reply follows at once, before it can run another job: the next job
    # either fails with the worker (it was sent there first) or runs on the replacement.
    try:
        pool.submit(os.getpid).result(WAIT)
    except WorkerCrashedError as exc:
        assert "breaks the protocol" in str(exc)
    assert pool.submit(abs, -5).result(WAIT) == 5
    assert pool.stats().worker_restarts == 1


def _short_jobs_then_a_recall(pool: Pool) -> None:
    """Short jobs, sent ahead into the worker's pipe, behind one that runs long enough to have
    them recalled; then more: all must run."""
    for _ in range(3):
        futures = [pool.submit(abs, -i) for i in range(20)]
        futures.append(pool.submit(jobs.sleep_for, 0.05))
        futures += [pool.submit(abs, -i) for i in range(20)]
        assert [f.result(WAIT) for f in futures] == [*range(20), 0.05, *range(20)]


@pytest.mark.parametrize("backend", PROCESS)
@pytest.mark.parametrize("how", ["close", "null"])
def test_job_that_breaks_the_workers_recall_pipe(
    make_pool: MakePool, backend: str, how: str
) -> None:
    """Found by the fault campaign: a job that closed the worker's end of its recall pipe (or
    put /dev/null in its place) left the worker unable to hand back jobs sent ahead; the pool
    waited for it forever, every later job stayed queued and shutdown() hung. Now the worker
    ends after that job (which fails: exit code 71) and a replacement serves the rest.

    Without /proc (JOBPOOL_PORTABLE) a worker that ends by itself takes its process group down
    with one SIGKILL, itself included: the job fails as killed by SIGKILL instead."""
    pool = make_pool(backend, workers=1)
    breaker = hostile.close_worker_descriptor if how == "close" else hostile.null_worker_descriptor
    ended = "code 71" if _platform.PROC else "SIGKILL"
    with pytest.raises(WorkerCrashedError, match=ended):
        pool.submit(breaker, "recall pipe").result(WAIT)
    _short_jobs_then_a_recall(pool)
    assert pool.stats().worker_restarts == 1


@pytest.mark.linux_only("memfd")  # the socket that passes memfds
@pytest.mark.parametrize("backend", PROCESS)
@pytest.mark.parametrize("how", ["close", "null"])
def test_job_that_breaks_the_workers_segment_socket(
    make_pool: MakePool, backend: str, how: str
) -> None:
    """Found by the fault campaign: a job that closed the worker's shared-memory socket (or put
    /dev/null in its place) returned normally, but the next job with a large argument sent
    there was lost: the pool could not send it, took the worker for dead, and waited for an
    exit that never came; its future never resolved. Now the pool kills that worker: the job
    fails with WorkerCrashedError saying why, and the next ones run on a replacement."""
    pool = make_pool(backend, workers=1, shared_memory_threshold=1024)
    breaker = hostile.close_worker_descriptor if how == "close" else hostile.null_worker_descriptor
    assert pool.submit(breaker, "segment socket").result(WAIT) == "segment socket"
    data = bytes(range(256)) * 16
    with pytest.raises(WorkerCrashedError, match="could not send it a job") as info:
        pool.submit(bytes, data).result(WAIT)
    assert info.value.signal == "SIGKILL"
    assert [pool.submit(bytes, data).result(WAIT) for _ in range(3)] == [data] * 3
    assert pool.stats().worker_restarts == 1


@pytest.mark.linux_only("memfd")  # the socket that passes memfds
@pytest.mark.parametrize("backend", PROCESS)
def test_large_result_of_a_job_that_closed_the_segment_socket(
    make_pool: MakePool, backend: str
) -> None:
    """Found by the fault campaign: the job returned, but its large result could not be sent
    through the socket it had closed, and the future failed with a bare ``OSError: [Errno 9]
    Bad file descriptor``, as if the job had raised it. The result now goes through the pipe."""
    pool = make_pool(backend, workers=1, shared_memory_threshold=1024)
    assert pool.submit(hostile.close_segment_socket_then_return, 5000).result(WAIT) == b"s" * 5000


@pytest.mark.parametrize("backend", PROCESS)
@pytest.mark.parametrize("how", ["close", "null"])
def test_job_that_breaks_the_workers_job_pipe(make_pool: MakePool, backend: str, how: str) -> None:
    pool = make_pool(backend, workers=1)
    breaker = hostile.close_worker_descriptor if how == "close" else hostile.null_worker_descriptor
    with pytest.raises(WorkerCrashedError):
        pool.submit(breaker, "job pipe").result(WAIT)
    _short_jobs_then_a_recall(pool)
    assert pool.stats().worker_restarts == 1


@pytest.mark.logs_errors  # the dispatcher's death is logged, as it must be
@pytest.mark.parametrize("backend", PROCESS)
def test_a_dead_dispatcher_fails_every_waiting_future(make_pool: MakePool, backend: str) -> None:
    """If the dispatcher thread dies anyway (a bug), nothing hangs: every future in flight
    fails at once with the reason, the pool says it is broken, shutdown() returns."""
    pool = make_pool(backend, workers=2)
    with StartGate() as gate:
        running = [pool.submit(jobs.gate_job, gate.address, i) for i in range(2)]
        for i in range(2):
            gate.wait_for(i)
        queued = [pool.submit(abs, -i) for i in range(5)]
        lent = threading.Thread(target=lambda: running[0].exception(WAIT), daemon=True)
        lent.start()  # a caller reading its own job's reply (when the pool lends the pipe)

        def boom() -> None:
            raise RuntimeError("injected into the dispatcher")

        pool._backend._dispatcher.call(boom)  # type: ignore[attr-defined]
        for future in running + queued:
            error = future.exception(WAIT)
            assert isinstance(error, InitializerError), error
            assert "injected into the dispatcher" in str(error)
        lent.join(WAIT)
        assert not lent.is_alive()
        with pytest.raises(InitializerError, match="injected into the dispatcher"):
            pool.submit(abs, -1)
        assert "broken" in repr(pool)
        pool.shutdown(wait=True)  # returns: no worker is left to wait for


# --- 3. a job that leaves a non-daemon thread ----------------------------------------------------


LEAVES_THREAD_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import hostile
from jobpool import Pool

with Pool(2, backend="process", start_method={method!r}) as pool:
    pool.submit(hostile.leaves_thread).result(60)
print("LEFT THE WITH BLOCK", flush=True)
pool = Pool(2, backend="process", start_method={method!r})
pool.submit(hostile.leaves_thread).result(60)
pool.shutdown()
print("SHUT DOWN", flush=True)
pool = Pool(2, backend="process", start_method={method!r})
pool.submit(hostile.leaves_thread).result(60)
print("EXITING", flush=True)  # no shutdown: the interpreter's exit closes the pool
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_thread_left_by_a_job_hangs_nothing(method: str) -> None:
    """Issue 23, item 3: leaving the with block, shutdown() and interpreter exit all return,
    whatever threads a job left (the child interpreter must end within the deadline)."""
    done = run_child(LEAVES_THREAD_SCRIPT.format(tests=str(TESTS), method=method))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["LEFT THE WITH BLOCK", "SHUT DOWN", "EXITING"]


# --- 4. a pool used in a forked child ------------------------------------------------------------

FORKED_CHILD_SCRIPT = """
import concurrent.futures
import gc
import os
import sys
sys.path.insert(0, {tests!r})
import hostile
from jobpool import Pool

KWARGS = {kwargs!r}
fifo = {fifo!r}
os.mkfifo(fifo)
pool = Pool(2, **KWARGS)
assert pool.submit(abs, -1).result(60) == 1
held = pool.submit(hostile.read_fifo, fifo)  # runs (blocked) while the child lives
report_r, report_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(report_r)
    out = []
    for name, call in [
        ("submit", lambda: pool.submit(abs, -2)),
        ("map", lambda: list(pool.map(abs, [-1, -2]))),
        ("options", lambda: pool.options(timeout=5).submit(abs, -2)),
        ("kill", lambda: pool.kill(held)),
        ("stats", lambda: pool.stats()),
    ]:
        try:
            call()
            out.append(name + " ACCEPTED")
        except RuntimeError as exc:
            ok = "Create a new Pool in the child" in str(exc) and str(os.getpid()) in str(exc)
            out.append(name + (" REFUSED" if ok else " WRONG " + str(exc)))
    try:
        held.result(timeout=0.5)  # the parent's job: its reply is the parent's to read
        out.append("held RESOLVED")
    except concurrent.futures.TimeoutError:
        out.append("held WAITS")
    with Pool(2, **KWARGS) as own:  # a new pool in the child works
        out.append("own " + str(own.submit(abs, -3).result(60)))
    pool.shutdown()  # the parent's pool: nothing to do here
    os.write(report_w, ("\\n".join(out)).encode())
    os.close(report_w)
    del pool
    gc.collect()
    sys.exit(0)  # a normal exit: the interpreter's and multiprocessing's exit hooks run
os.close(report_w)
report = b""
while True:
    data = os.read(report_r, 65536)
    if not data:
        break
    report += data
status = os.waitpid(pid, 0)[1]
print(report.decode(), flush=True)
print("child status", os.waitstatus_to_exitcode(status), flush=True)
with open(fifo, "w") as f:
    f.write("go")
print("held", held.result(60), flush=True)
print("after", [pool.submit(abs, -i).result(60) for i in range(10)], flush=True)
stats = pool.stats()
print("restarts", stats.worker_restarts, "failed", stats.failed, flush=True)
pool.shutdown()
"""


@pytest.mark.skipif(not LINUX, reason="a child subreaper finds what the child leaves")
@pytest.mark.parametrize("backend", ["thread", *PROCESS])
def test_pool_used_in_a_forked_child(backend: str, tmp_path: Path) -> None:
    """Issue 23, item 2: the child's copy refuses clearly and disturbs nothing of the parent's
    pool, even at the child's exit; a new pool in the child works (forkserver too)."""
    script = FORKED_CHILD_SCRIPT.format(
        tests=str(TESTS), kwargs=_kwargs(backend), fifo=str(tmp_path / "fifo")
    )
    done = run_child(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "submit REFUSED",
        "map REFUSED",
        "options REFUSED",
        "kill REFUSED",
        "stats REFUSED",
        "held WAITS",
        "own 3",
        "child status 0",
        "held go",
        f"after {list(range(10))}",
        "restarts 0 failed 0",
    ], done.stderr
    assert "Traceback" not in done.stderr, done.stderr


# --- 5. running out of file descriptors ----------------------------------------------------------

LARGE_QUEUE_SCRIPT = """
import resource
import sys
sys.path.insert(0, {tests!r})
import hostile
from jobpool import Pool, WorkerCrashedError

resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
data = bytes([1]) * (96 * 1024)  # through shared memory: the threshold is 64 KiB
pool = Pool(2, backend="process", start_method={method!r}, shared_memory_threshold=64 * 1024)
futures = [pool.submit(hostile.first_byte_or_crash, data, i) for i in range(800)]
outcomes = {{}}
for i, future in enumerate(futures):
    try:
        assert future.result(120) == 1 + i
        outcome = "ok"
    except WorkerCrashedError:
        outcome = "crashed" if i % 20 == 19 else "crashed, not a crasher"
    except Exception as exc:
        outcome = type(exc).__name__
    outcomes[outcome] = outcomes.get(outcome, 0) + 1
print(sorted(outcomes.items()), flush=True)
print("restarts", pool.stats().worker_restarts, flush=True)
pool.shutdown()
"""


@pytest.mark.skipif(not LINUX, reason="lowers the descriptor limit of a child interpreter")
@pytest.mark.parametrize("method", START_METHODS)
def test_queued_large_jobs_and_crashes_under_a_descriptor_limit(method: str) -> None:
    """Issue 23, item 7, scaled to ``ulimit -n 256``: 800 queued jobs with a large argument,
    every twentieth crashing its worker. Queued jobs stay within their descriptor budget, so
    every crashed worker is replaced and every job resolves; the pool never breaks."""
    done = run_child(LARGE_QUEUE_SCRIPT.format(tests=str(TESTS), method=method), timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[('crashed', 40), ('ok', 760)]",
        "restarts 40",
    ], done.stderr


NO_DESCRIPTORS_SCRIPT = """
import os
import resource
import sys
sys.path.insert(0, {tests!r})
import hostile
import jobs
from jobpool import InitializerError, Pool, WorkerCrashedError
from jobpool._process import _workers

resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
pool = Pool(2, backend="process", start_method={method!r})
with jobs.StartGate() as gate:  # two jobs at once: both workers start (the pool grows)
    both = [pool.submit(jobs.gate_job, gate.address, i, i) for i in range(2)]
    assert len({{gate.wait_for(0), gate.wait_for(1)}}) == 2
    gate.release(0)
    gate.release(1)
    assert [f.result(60) for f in both] == [0, 1]
assert [pool.submit(abs, -i).result(60) for i in range(4)] == [0, 1, 2, 3]
filler = hostile.fill_descriptors()  # no descriptor left in this process
crash = pool.submit(jobs.exit_now, 3)
try:
    crash.result(60)
except WorkerCrashedError:
    print("crashed", flush=True)
# Its replacement cannot start (no descriptor for its pipes): the other worker serves.
print("while full", [pool.submit(abs, -i).result(60) for i in range(5)], flush=True)
for fd in filler:
    os.close(fd)
# The replacement starts once it can: two jobs run at once again.
with jobs.StartGate() as gate:
    both = [pool.submit(jobs.gate_job, gate.address, i, i) for i in range(2)]
    pids = {{gate.wait_for(0), gate.wait_for(1)}}
    gate.release(0)
    gate.release(1)
    print("two workers", len(pids), [f.result(60) for f in both], flush=True)
pool.shutdown()

# With no worker able to start for START_RETRY_SECONDS while jobs wait, the pool breaks,
# saying why; the fork server (if any) is not left dead: a new pool starts.
_workers.START_RETRY_SECONDS = 1.0
pool = Pool(1, backend="process", start_method={method!r})
assert pool.submit(abs, -1).result(60) == 1
filler = hostile.fill_descriptors()
crash = pool.submit(jobs.exit_now, 3)
queued = pool.submit(abs, -7)
try:
    crash.result(60)
except WorkerCrashedError:
    print("crashed", flush=True)
try:
    queued.result(60)
except InitializerError as exc:
    print("queued job failed:", "Too many open files" in str(exc), flush=True)
for fd in filler:
    os.close(fd)
pool.shutdown()
with Pool(1, backend="process", start_method={method!r}) as again:
    print("new pool", again.submit(abs, -9).result(60), flush=True)
"""


@pytest.mark.skipif(not LINUX, reason="fills the descriptor table of a child interpreter")
@pytest.mark.parametrize("method", START_METHODS)
def test_worker_that_cannot_start_for_want_of_descriptors(method: str) -> None:
    done = run_child(NO_DESCRIPTORS_SCRIPT.format(tests=str(TESTS), method=method))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "crashed",
        "while full [0, 1, 2, 3, 4]",
        "two workers 2 [0, 1]",
        "crashed",
        "queued job failed: True",
        "new pool 9",
    ], done.stderr


RECEIVE_WITHOUT_DESCRIPTORS_SCRIPT = """
import os
import sys
sys.path.insert(0, {tests!r})
import hostile
from jobpool._process import _large_data, _shared_memory

ours, theirs = _shared_memory.socket_pair()
segment, _ = _shared_memory.write_segment([memoryview(b"x" * 8192)])
_shared_memory.send_fd(ours, 7, segment.fd)
filler = hostile.fill_descriptors()  # the receiver has no descriptor number left
incoming = _large_data.receive(theirs, 7, (b"", [(0, 8192)], 8192))
for fd in filler:
    os.close(fd)
try:
    incoming.load(writable=True)
    print("loaded")
except OSError as exc:
    print("failed:", exc.strerror)
"""


@pytest.mark.parametrize("backend", PROCESS)
def test_worker_without_descriptors_survives_its_housekeeping(
    make_pool: MakePool, backend: str
) -> None:
    """Found by the fault campaign: in a worker a job had left without descriptors, the look
    for zombies between jobs failed (it could not import or read anything) and the exception
    ended the worker, failing the next job, an innocent one, with WorkerCrashedError. The look
    is housekeeping: it now tries again later, and the worker serves on."""
    pool = make_pool(backend, workers=1)
    assert pool.submit(hostile.zombie_without_descriptors).result(WAIT) > 0
    assert [pool.submit(abs, -i).result(WAIT) for i in range(5)] == list(range(5))
    assert pool.stats().worker_restarts == 0


@pytest.mark.linux_only("memfd")
def test_segment_received_without_a_free_descriptor_fails_its_job_saying_so() -> None:
    """A result (or argument) whose descriptor the kernel had to drop (no descriptor free in
    the receiver) fails with an error that says so, not as memory 'released' before reading."""
    done = run_child(RECEIVE_WITHOUT_DESCRIPTORS_SCRIPT.format(tests=str(TESTS)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("failed: the shared memory holding this job's data could not be")
    assert "ulimit -n" in done.stdout


# --- 6. result segments are sealed ---------------------------------------------------------------


@pytest.mark.linux_only("memfd")
@pytest.mark.parametrize("backend", PROCESS)
def test_result_cannot_be_changed_after_it_arrived(make_pool: MakePool, backend: str) -> None:
    """Issue 23, item 8: a result segment kept open in the worker can be neither written nor
    truncated once the caller has the result (which would kill the caller with SIGBUS)."""
    pytest.importorskip("numpy")
    pool = make_pool(backend, workers=1)
    size = 4 << 20
    result = pool.submit(hostile.keep_result_segment, size).result(WAIT)
    outcomes = pool.submit(hostile.attack_kept).result(WAIT)
    assert outcomes == [
        "truncate refused (Operation not permitted)",
        "write refused (Operation not permitted)",
        "map refused (Operation not permitted)",
    ]
    # Only now that nothing could shrink it is the result read, to the last page.
    assert result.shape == (size,) and bool((result == 7).all())
    result[0] = 8  # still the caller's own, writable copy-on-write
    assert result[0] == 8


@pytest.mark.linux_only("memfd")
def test_segments_are_sealed_and_unsealed_ones_are_refused() -> None:
    """Both ways (arguments and results use the same writer and reader): what is written is
    sealed before its descriptor leaves; what is received must be sealed to be mapped."""
    import fcntl

    from jobpool._process import _shared_memory as shm

    payload = memoryview(b"x" * 8192)
    segment, _ = shm.write_segment([payload])
    try:
        assert fcntl.fcntl(segment.fd, fcntl.F_GET_SEALS) & shm.SEALS == shm.SEALS
        reopened = os.open(f"/proc/self/fd/{segment.fd}", os.O_RDWR)
        try:
            with pytest.raises(PermissionError):
                os.ftruncate(reopened, 0)
            with pytest.raises(PermissionError):
                os.pwrite(reopened, b"y", 0)
        finally:
            os.close(reopened)
        assert bytes(shm.map_segment(segment.fd, segment.size, writable=True)) == bytes(payload)
        with pytest.raises(OSError, match="holds 8192 bytes where 9000 were announced"):
            shm.map_segment(segment.fd, 9000, writable=False)
    finally:
        segment.close()
    unsealed = os.memfd_create("not-jobpool")
    try:
        os.ftruncate(unsealed, 8192)
        with pytest.raises(OSError, match="not sealed"):
            shm.map_segment(unsealed, 8192, writable=True)
    finally:
        os.close(unsealed)


# --- 7. smaller items -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["thread", *PROCESS])
def test_kill_of_a_future_the_pool_never_made(make_pool: MakePool, backend: str) -> None:
    """``pool.kill()`` of a future the pool did not make returns False and leaves it alone."""
    from concurrent.futures import Future

    pool = make_pool(backend, workers=1)
    other = make_pool(backend, workers=1)
    stranger: Future[int] = Future()
    assert pool.kill(stranger) is False
    assert not stranger.cancelled() and not stranger.done()
    with StartGate() as gate:
        busy = other.submit(jobs.gate_job, gate.address, "busy", 1)
        gate.wait_for("busy")
        waiting = other.submit(abs, -2)  # queued behind it in the other pool
        assert pool.kill(busy) is False and pool.kill(waiting) is False
        assert not waiting.cancelled()
        gate.release("busy")
        assert busy.result(WAIT) == 1 and waiting.result(WAIT) == 2
    mine = pool.submit(abs, -3)
    assert mine.result(WAIT) == 3
    assert pool.kill(mine) is False  # finished: nothing to kill


@pytest.mark.skipif(not hasattr(os, "setsid"), reason="POSIX sessions")
@pytest.mark.parametrize("backend", PROCESS)
def test_setsid_in_a_job_and_what_to_do_instead(make_pool: MakePool, backend: str) -> None:
    """A worker leads its own process group, so ``os.setsid()`` in a job fails with EPERM (as
    documented in usage/programs.md); a program started with ``start_new_session=True``, or a
    child the job forks, gets a session of its own."""
    pool = make_pool(backend, workers=1)
    with pytest.raises(PermissionError):
        pool.submit(os.setsid).result(WAIT)
    program = [sys.executable, "-c", "import os, sys; sys.exit(os.getsid(0) == os.getpid())"]
    started = pool.submit(subprocess.call, program, start_new_session=True)
    assert started.result(WAIT) == 1
    assert pool.submit(hostile.fork_setsid).result(WAIT) == 0


# --- helpers -------------------------------------------------------------------------------------


def _kwargs(backend: str) -> dict[str, Any]:
    if backend.startswith("process-"):
        return {"backend": "process", "start_method": backend.split("-", 1)[1]}
    return {"backend": backend}


def run_child(script: str, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a child interpreter with a deadline; every process it leaves behind
    is found (the test is a child subreaper) and fails the test."""
    from proctree import descendants, reap, subreaper

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE), env.get("PYTHONPATH")]))
    with subreaper():
        before = descendants(os.getpid())
        try:
            done = subprocess.run(
                [sys.executable, "-c", textwrap.dedent(script)],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
            )
        finally:
            leftovers = reap(descendants(os.getpid()) - before)
    assert not leftovers, f"processes left behind: {leftovers}"
    return done
