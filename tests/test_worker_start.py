"""A worker that cannot start says why: its own exception, or its last words and exit status.

The pool breaks (InitializerError, a BrokenExecutor) instead of restarting workers forever; the
error carries what the worker reported, never a guess.
"""

from __future__ import annotations

import importlib
import io
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

import jobs
from conftest import PROCESS_BACKENDS, START_METHODS, WAIT
from jobpool import InitializerError, Pool, RemoteTraceback


def first_error(pool: Pool) -> BaseException:
    """The error the broken pool gives its first job (or its submit, if it broke already)."""
    try:
        future = pool.submit(jobs.square, 3)
    except InitializerError as exc:
        return exc
    error = future.exception(timeout=WAIT)
    assert error is not None
    return error


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_initializer_that_raises_is_reported_with_its_traceback(
    make_pool: Callable[..., Pool], backend: str
) -> None:
    pool = make_pool(backend, initializer=jobs.fail_initializer)
    error = first_error(pool)
    assert isinstance(error, InitializerError)
    assert "raised in worker process" in str(error)
    assert "RuntimeError: initializer says no" in str(error)
    cause = error.__cause__
    assert isinstance(cause, RuntimeError) and str(cause) == "initializer says no"
    assert isinstance(cause.__cause__, RemoteTraceback)
    assert "in fail_initializer" in cause.__cause__.tb


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_worker_that_dies_while_starting_is_described_by_its_stderr(
    make_pool: Callable[..., Pool], backend: str
) -> None:
    pool = make_pool(backend, initializer=jobs.say_then_exit, initargs=(7,))
    error = first_error(pool)
    assert isinstance(error, InitializerError)
    message = str(error)
    assert "exited with code 7 while starting" in message
    assert "loading the model from /nowhere\n    giving up" in message
    assert error.__cause__ is None  # nothing it could report: no invented cause


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_worker_killed_while_starting_names_the_signal(
    make_pool: Callable[..., Pool], backend: str
) -> None:
    pool = make_pool(backend, initializer=jobs.kill_self_in_initializer)
    message = str(first_error(pool))
    assert "was killed by SIGKILL (exit code -9) while starting" in message
    assert "It wrote nothing to stderr after it started." in message


@pytest.fixture
def vanishing_module(tmp_path: Path) -> Iterator[Any]:
    """A module the parent imported whose file is gone: a fresh worker cannot import it."""
    (tmp_path / "vanishing_init.py").write_text("def init():\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("vanishing_init")
        (tmp_path / "vanishing_init.py").unlink()
        importlib.invalidate_caches()
        yield module
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vanishing_init", None)


@pytest.mark.parametrize("backend", ["process-spawn", "process-forkserver"])
def test_initializer_whose_module_cannot_be_imported(
    make_pool: Callable[..., Pool], backend: str, vanishing_module: Any
) -> None:
    if backend.split("-")[1] not in START_METHODS:
        pytest.skip("start method not available")
    pool = make_pool(backend, initializer=vanishing_module.init)
    error = first_error(pool)
    assert isinstance(error, InitializerError)
    assert "could not be loaded in worker process" in str(error)
    assert isinstance(error.__cause__, ModuleNotFoundError)
    assert "vanishing_init" in str(error.__cause__)


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_worker_starts_with_its_namespace_adopted_as_it_would_adopt_it(
    make_pool: Callable[..., Pool], backend: str
) -> None:
    """A forkserver worker takes the adoption its server made once for all (the names are the
    same), and no longer says so: a process it forks adopts its own namespace."""
    pool = make_pool(backend, workers=1)
    assert pool.submit(jobs.adopted_state).result(timeout=WAIT) == (True, False)


SHARED_OBJECTS = """
import multiprocessing, sys
sys.path.insert(0, {tests!r})
import jobpool, jobs

SHARED = {{}}


def keep(lock, queue, value):  # from the script: it travels by value
    SHARED.update(lock=lock, queue=queue, value=value)


def add(x):
    with SHARED["lock"]:
        SHARED["value"].value += x
    SHARED["queue"].put(x)
    return x


if __name__ == "__main__":
    context = multiprocessing.get_context({method!r})
    for initializer, job in ((keep, add), (jobs.keep_shared, jobs.add_to_shared)):
        lock, queue, value = context.Lock(), context.Queue(), context.Value("i", 0)
        with jobpool.Pool(2, backend="process", start_method={method!r},
                          initializer=initializer, initargs=(lock, queue, value)) as pool:
            total = sum(pool.map(job, range(10)))
        items = sorted(queue.get(timeout=60) for _ in range(10))
        print(total, value.value, items == list(range(10)))
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_an_initializer_receives_locks_queues_and_values(tmp_path: Path, method: str) -> None:
    """Objects multiprocessing lets travel only at process creation reach the initializer, from
    the script (by value) and from a module, as with the standard library's pools."""
    script = tmp_path / "shared.py"
    script.write_text(SHARED_OBJECTS.format(tests=str(Path(__file__).parent), method=method))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["45 45 True", "45 45 True"], done.stderr


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_what_a_job_put_on_a_queue_arrives_though_its_worker_stopped_at_once(
    make_pool: Callable[..., Pool], backend: str
) -> None:
    """A ``multiprocessing.Queue`` sends from a thread of the worker: a worker stopped right
    after the job waits for it (as a multiprocessing process does at its exit) instead of
    ending with the item unsent."""
    queue = multiprocessing.get_context(backend.split("-", 1)[1]).Queue()
    pool = make_pool(backend, workers=1, initializer=jobs.keep_queue, initargs=(queue,))
    assert pool.submit(jobs.put_slowly, 7).result(timeout=WAIT) == 7
    pool.shutdown(wait=True)
    assert queue.get(timeout=WAIT) == 7
    queue.close()
    queue.join_thread()


def test_startup_stderr_keeps_a_stream_that_writes_each_line_to_fd_2(tmp_path: Path) -> None:
    from jobpool._process._start import _writes_to_fd_2

    line_buffered = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    block_buffered = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=False)
    with open(tmp_path / "elsewhere", "w", buffering=1) as elsewhere:
        assert _writes_to_fd_2(line_buffered)
        # Replaced: lines would wait in its buffer, lost if the worker dies; other files and
        # captures without a descriptor of their own would not reach the pipe at all.
        assert not _writes_to_fd_2(block_buffered)
        assert not _writes_to_fd_2(elsewhere)
        assert not _writes_to_fd_2(io.StringIO())
        assert not _writes_to_fd_2(None)
