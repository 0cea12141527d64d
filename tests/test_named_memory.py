"""Shared memory without memfd: named files in a private directory (``_process/_named_memory``).

This is what macOS and the BSDs run, and what Linux runs with ``JOBPOOL_PORTABLE=1`` (CI runs the
whole suite so a second time, test_large_data.py included). The tests here run in both CI runs:
in this process they turn memfd off for the pool they make (``_platform.MEMFD``; the workers
follow their channel), and child interpreters get ``JOBPOOL_DISABLE=memfd``.

What they check is what names add to memfds: every name is unlinked by whoever is left, after a
job that ends any way, a worker killed while it writes a result, a parent killed outright in the
middle of a transfer (its workers remove its directory), and everything killed at once (the next
process that makes a directory sweeps the dead one); and a result cannot change under the caller
although files cannot be sealed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

import hostile
import jobs
from conftest import WAIT, MakePool, wait_until
from jobpool import WorkerCrashedError, _platform
from jobpool._process import _named_memory
from jobpool._process._named_end import WorkerEnd
from jobpool._process._named_memory import LOCK_SUFFIX, PREFIX, base_directory
from proctree import descendants, reap, subreaper, wait_exited

pytestmark = pytest.mark.skipif(not _platform.SHARED_FILES, reason="POSIX files")

MB = 1 << 20
SIZE = 2 * MB
TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def named(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Pools made in this test use named segments; yields this process's directory."""
    monkeypatch.setattr(_platform, "MEMFD", False)
    directory = _named_memory.own_directory().path
    yield directory
    wait_until(lambda: not os.listdir(directory), f"the files in {directory} to be unlinked")


def owned_by(pid: int) -> list[str]:
    """What ``pid`` has in the base directory: its directory and its lock file."""
    return sorted(n for n in os.listdir(base_directory()) if n.startswith(f"{PREFIX}{pid}-"))


def child_env() -> dict[str, str]:
    env = {**os.environ, "JOBPOOL_DISABLE": "memfd"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS, env.get("PYTHONPATH")]))
    return env


# --- in this process ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["process-forkserver", "process-fork"])
def test_arguments_and_results_travel_by_name_and_leave_no_file(
    make_pool: MakePool, named: str, backend: str
) -> None:
    numpy = pytest.importorskip("numpy")
    pool = make_pool(backend, workers=2)
    big = numpy.arange(SIZE // 8, dtype=numpy.float64)
    assert pool.submit(jobs.segments_mapped_here, big).result(WAIT) == 1  # mapped in place
    echoed = pool.submit(jobs.identity, big).result(WAIT)
    assert numpy.array_equal(echoed, big) and echoed.flags.writeable
    echoed[0] = -1.0  # the caller's own memory
    assert big[0] == 0.0
    results = list(pool.map(jobs.ones_array, [SIZE // 8] * 4, timeout=WAIT))
    assert all(r.shape == (SIZE // 8,) and r.sum() == SIZE // 8 for r in results)
    assert pool.submit(jobs.describe, big).result(WAIT) == ("ndarray", False)


@pytest.mark.parametrize("backend", ["process-forkserver", "process-fork"])
def test_a_result_cannot_change_under_the_caller(
    make_pool: MakePool, named: str, backend: str
) -> None:
    """Files cannot be sealed: a thread the job left may reopen its result file and write or
    truncate it. The caller's result was copied as it arrived, so it stays whole (no SIGBUS)."""
    numpy = pytest.importorskip("numpy")
    pool = make_pool(backend, workers=1)
    size = 4 * MB
    result = pool.submit(hostile.keep_result_file, size).result(WAIT)
    outcomes = pool.submit(hostile.attack_kept).result(WAIT)
    assert outcomes == ["truncate done", "write done", "map done"]
    assert result.shape == (size,) and bool((result == 7).all())
    assert numpy.count_nonzero(result != 7) == 0


def test_a_worker_killed_after_writing_its_result_leaves_no_file(
    make_pool: MakePool, named: str
) -> None:
    """The file is written, the worker dies before the reply that names it: the parent removes
    that worker's files when it buries it (the fixture checks the directory is empty)."""
    pool = make_pool("process-forkserver", workers=1)
    with pytest.raises(WorkerCrashedError):
        pool.submit(hostile.die_once_result_written, SIZE).result(WAIT)
    assert pool.submit(jobs.square, 3).result(WAIT) == 9


def test_a_name_the_receiver_took_is_put_back_to_send_again(named: str) -> None:
    """A job whose worker opened (and unlinked) its arguments and that is sent again finds them
    under its name once more, with the same bytes."""
    from jobpool._process import _large_data

    payload = memoryview(jobs.bytes_of(8192))
    path = _named_memory.argument_path(named, 10**9)
    outgoing = _large_data._outgoing([payload], path)
    try:
        taken = WorkerEnd(named, "w").receive(10**9, outgoing.segment.size)
        assert not os.path.exists(path)
        assert bytes(taken.map(False)) == bytes(payload)
        taken.close()
        outgoing.send(None, 10**9, b"")
        assert os.path.exists(path)
        again = WorkerEnd(named, "w").receive(10**9, outgoing.segment.size)
        assert bytes(again.map(False)) == bytes(payload)
        again.close()
    finally:
        outgoing.close()
    assert not os.path.exists(path)


def test_a_short_file_is_refused(named: str) -> None:
    path = os.path.join(named, "r-short-1")
    segment, _ = _named_memory.write_file(path, [memoryview(b"x" * 100)])
    received = _named_memory._open_and_unlink(path, 4096, True)
    with pytest.raises(OSError, match="holds 100 bytes where 4096 were announced"):
        received.map(True)
    received.close()
    segment.close()


def test_a_sweep_leaves_a_living_owner_alone_and_removes_a_dead_one(tmp_path: Any) -> None:
    base = str(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys
        from jobpool._process import _named_memory
        directory = _named_memory.Directory({base!r})
        open(directory.path + "/a1", "w").close()
        print(directory.path, flush=True)
        sys.stdin.read()
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert owner.stdout is not None
        path = owner.stdout.readline().strip()
        assert os.path.isdir(path)
        _named_memory.sweep(base)
        assert os.listdir(path) == ["a1"], "a living owner's directory was swept"
        owner.kill()
        owner.wait(WAIT)
        _named_memory.sweep(base)
        assert os.listdir(base) == [], "a dead owner's directory was left"
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.communicate(timeout=WAIT)


# --- a parent killed outright ------------------------------------------------------------------

CHILD = """
import sys
import jobs
from jobpool import Pool
from jobpool._process import _named_memory

if __name__ == "__main__":
    pool = Pool(2, backend="process", start_method={method!r})
    data = memoryview(jobs.bytes_of({size}))
    running = pool.submit(jobs.gate_then_return, {gate!r}, "argument", data)  # mapped by a worker
    result = pool.submit(jobs.gate_then_ones, {gate!r}, "result", {size} // 8)
    queued = [pool.submit(jobs.identity, data) for _ in range(3)]  # their files wait
    print(_named_memory.own_directory().path, flush=True)
    sys.stdin.read()
"""


def _start_child(gate: Any, method: str) -> tuple[subprocess.Popen[str], str]:
    script = CHILD.format(method=method, size=SIZE, gate=gate.address)
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert child.stdout is not None
    directory = child.stdout.readline().strip()
    assert directory.startswith(os.path.join(base_directory(), PREFIX)), child.stderr
    return child, directory


def _end_child(child: subprocess.Popen[str], family: set[int]) -> set[int]:
    family |= descendants(child.pid)
    if child.poll() is None:
        child.kill()
    child.communicate(timeout=WAIT)
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return reap(family)


@pytest.mark.parametrize("method", ["forkserver", "fork"])
def test_a_parent_killed_mid_transfer_leaves_nothing_in_shared_memory(
    gate: Any, method: str
) -> None:
    """The parent is killed while a worker maps a job's arguments, three jobs' files wait and a
    result's file was written but not yet read: its workers remove its directory as they exit."""
    with subreaper():
        child, directory = _start_child(gate, method)
        family: set[int] = set()
        try:
            workers = {gate.wait_for("argument"), gate.wait_for("result")}
            family = descendants(child.pid)
            child.send_signal(signal.SIGSTOP)  # it cannot read the result's reply now
            gate.release("result")
            wait_until(
                lambda: any(n.startswith("r") for n in os.listdir(directory)),
                "the result's file to be written",
            )
            # The running job's name was unlinked as its worker opened it; the queued ones wait.
            assert len([n for n in os.listdir(directory) if n.startswith("a")]) == 3
            child.kill()
            child.wait(WAIT)
            assert not wait_exited(workers, WAIT)
            assert owned_by(child.pid) == [], f"left in {base_directory()}"
        finally:
            leftovers = _end_child(child, family)
        assert not leftovers, f"processes still there: {leftovers}"


def test_everything_killed_at_once_is_swept_by_the_next_pool(gate: Any) -> None:
    """Parent and workers killed together (no worker left to clean): the directory stays until
    the next process that makes one of its own sweeps it."""
    with subreaper():
        child, directory = _start_child(gate, "forkserver")
        family: set[int] = set()
        try:
            gate.wait_for("argument")
            gate.wait_for("result")
            family = descendants(child.pid) | {child.pid}
            for pid in family:  # stopped first: none can notice the others dying
                os.kill(pid, signal.SIGSTOP)
            for pid in family:
                os.kill(pid, signal.SIGKILL)
            assert not wait_exited(family, WAIT)
            assert os.path.basename(directory) + LOCK_SUFFIX in owned_by(child.pid)
        finally:
            leftovers = _end_child(child, family)
        assert not leftovers, f"processes still there: {leftovers}"
    script = textwrap.dedent(
        f"""
        import jobs
        from jobpool import Pool
        if __name__ == "__main__":
            with Pool(1, backend="process") as pool:
                data = jobs.bytes_of({SIZE})
                assert pool.submit(jobs.identity, data).result() == data
            print("done")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=WAIT,
    )
    assert done.stdout == "done\n", done.stderr
    assert owned_by(child.pid) == [], f"the dead directory was not swept from {base_directory()}"


def test_arguments_released_before_the_worker_opened_them_say_so(tmp_path: Any) -> None:
    """A job resolved (killed, say) while its worker was about to open its file: that job
    fails with what happened, not with a bare 'No such file'."""
    from jobpool._process import _large_data

    end = WorkerEnd(str(tmp_path), "w0")
    incoming = _large_data.receive(end, 12, (b"", [(0, 4096)], 4096))
    with pytest.raises(OSError, match="released before it could be read"):
        incoming.load(False)
