"""per_worker: one instance per worker, built on first use, closed when the worker exits normally.

Every case runs on the thread backend and the process backend under each start method; the Dask
cases run on the run's shared cluster (conftest.dask_address). The factories
(per_worker_samples) record each build (pid, thread, instance) and each close as a file, so the
test can count builds per worker and check closes without sharing memory with a worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import jobs
import per_worker_samples as samples
from conftest import LOCAL_BACKENDS, PROCESS_BACKENDS, WAIT, MakePool, join_or_fail, wait_until
from jobpool import (
    PerWorkerError,
    RemoteTraceback,
    SerializationError,
    WorkerCrashedError,
    per_worker,
)


@pytest.fixture(params=LOCAL_BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def check_one_build_per_worker(directory: str, calls: list[samples.Call]) -> None:
    """Each worker that ran a call built exactly one instance, and its calls all used it."""
    built = samples.builds(directory)
    by_worker = {(b.pid, b.thread): b.uid for b in built}
    assert len(by_worker) == len(built), f"a worker built twice: {built}"
    assert {(c.pid, c.thread) for c in calls} == set(by_worker)
    for call in calls:
        assert call.uid == by_worker[call.pid, call.thread]


def check_all_closed(directory: str) -> None:
    built = {b.uid for b in samples.builds(directory)}
    assert built and samples.closes(directory) == built


# --- results, one build per worker, closed at shutdown -----------------------------------------


def test_results_and_one_build_per_worker(
    make_pool: MakePool, backend_name: str, tmp_path: Path
) -> None:
    recorder = per_worker(samples.Recorder, str(tmp_path), scale=3)
    pool = make_pool(backend_name, workers=2)
    calls = [pool.submit(recorder.where, i) for i in range(40)]
    mapped = list(pool.map(recorder.where, range(200), timeout=WAIT))
    chunked = list(pool.map(recorder.where, range(50), chunksize=7, timeout=WAIT))
    results = [f.result(WAIT) for f in calls] + mapped + chunked
    assert [c.value for c in results] == [3 * i for i in [*range(40), *range(200), *range(50)]]
    check_one_build_per_worker(str(tmp_path), results)
    assert not samples.closes(str(tmp_path)), "closed while the workers still run"
    pool.shutdown(wait=True)
    check_all_closed(str(tmp_path))


@pytest.mark.parametrize("backend_name", PROCESS_BACKENDS)
def test_recycled_worker_closes_its_instance(
    make_pool: MakePool, backend_name: str, tmp_path: Path
) -> None:
    recorder = per_worker(samples.Recorder, str(tmp_path))
    pool = make_pool(backend_name, workers=1, max_jobs_per_worker=2)
    first = [pool.submit(recorder.where, i).result(WAIT) for i in range(2)]
    later = pool.submit(recorder.where, 2).result(WAIT)  # on the worker that replaced it
    assert later.pid != first[0].pid
    # Closed when it was recycled, before any shutdown.
    wait_until(lambda: first[0].uid in samples.closes(str(tmp_path)), "the recycled worker's close")
    more = [pool.submit(recorder.where, i).result(WAIT) for i in range(3, 6)]
    pool.shutdown(wait=True)
    check_one_build_per_worker(str(tmp_path), [*first, later, *more])
    assert len({c.pid for c in [*first, later, *more]}) == 3
    check_all_closed(str(tmp_path))


@pytest.mark.parametrize("backend_name", PROCESS_BACKENDS)
def test_threads_of_a_job_share_their_process_instance(
    make_pool: MakePool, backend_name: str, tmp_path: Path
) -> None:
    recorder = per_worker(samples.Recorder, str(tmp_path))
    pool = make_pool(backend_name, workers=1)
    calls = pool.submit(samples.where_from_threads, recorder, 8).result(WAIT)
    assert len(calls) == 8 and len({c.thread for c in calls}) == 8
    assert len({c.uid for c in calls}) == 1  # built once, by whichever thread came first
    assert len(samples.builds(str(tmp_path))) == 1


def test_instance_holding_a_lock_and_an_open_file(
    make_pool: MakePool, backend_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "log.txt"
    with pytest.raises(TypeError):  # what makes it impossible to send as such
        pickle.dumps(samples.LockedLog(str(tmp_path / "probe.txt")))
    log = per_worker(samples.LockedLog, str(path))
    pool = make_pool(backend_name, workers=2)
    lines = [f"line {i}" for i in range(30)]
    pids = list(pool.map(log.append, lines, timeout=WAIT))
    pool.shutdown(wait=True)  # each worker closes its file, which flushes it
    in_this_process = {pid == os.getpid() for pid in pids}
    assert in_this_process == {backend_name == "thread"}
    assert sorted(path.read_text(encoding="utf-8").splitlines()) == sorted(lines)


def test_several_handles_in_one_job_and_inside_arguments(
    make_pool: MakePool, backend_name: str, tmp_path: Path
) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = per_worker(samples.Recorder, str(first_dir))
    second = per_worker(samples.Recorder, str(second_dir), scale=10)
    pool = make_pool(backend_name, workers=2)
    pairs = [pool.submit(samples.combine, first, second, i) for i in range(10)]
    nested = [pool.submit(samples.use_all, {"all": [first, second]}, x=i) for i in range(10)]
    results = [f.result(WAIT) for f in pairs] + [tuple(f.result(WAIT)) for f in nested]
    assert [(a.value, b.value) for a, b in results] == [(i, 10 * i) for i in range(10)] * 2
    pool.shutdown(wait=True)
    check_one_build_per_worker(str(first_dir), [a for a, _ in results])
    check_one_build_per_worker(str(second_dir), [b for _, b in results])
    check_all_closed(str(first_dir))
    check_all_closed(str(second_dir))


def test_handle_called_as_a_function(make_pool: MakePool, backend_name: str) -> None:
    scale = per_worker(jobs.identity, jobs.square)  # the instance is the square function
    pool = make_pool(backend_name, workers=2)
    assert pool.submit(scale, 7).result(WAIT) == 49
    assert list(pool.map(scale, range(5), timeout=WAIT)) == [0, 1, 4, 9, 16]


# --- a factory that raises ----------------------------------------------------------------------


@pytest.fixture
def flaky(tmp_path: Path) -> Any:
    """A handle whose first build (in whichever worker) raises ValueError, the next ones work."""
    (tmp_path / "fail-1").touch()
    return per_worker(samples.FailingOnce, str(tmp_path))


def test_factory_that_raises_fails_only_its_job(
    make_pool: MakePool, backend_name: str, tmp_path: Path, flaky: Any
) -> None:
    pool = make_pool(backend_name, workers=1)
    worker = pool.submit(jobs.get_pid).result(WAIT)
    with pytest.raises(PerWorkerError) as caught:
        pool.submit(flaky.where, 1).result(WAIT)
    error = caught.value
    assert error.factory == "per_worker_samples.FailingOnce"
    assert "per_worker_samples.FailingOnce raised ValueError: cannot connect (fail-1)" in str(error)
    assert isinstance(error.exception, ValueError)
    assert str(error.exception) == "cannot connect (fail-1)"
    if backend_name == "thread":
        assert error.__cause__ is error.exception and error.__cause__.__traceback__ is not None
    else:
        assert isinstance(error.__cause__, RemoteTraceback)
        assert 'raise ValueError(f"cannot connect ({token.name})")' in error.__cause__.tb
    # The next job on the same worker builds it; the pool went on without a restart.
    assert pool.submit(flaky.where, 2).result(WAIT).value == 2
    assert pool.submit(jobs.get_pid).result(WAIT) == worker
    assert pool.stats().worker_restarts == 0
    pool.shutdown(wait=True)
    assert len(samples.builds(str(tmp_path))) == 1
    check_all_closed(str(tmp_path))


def test_factory_that_raises_in_a_map_chunk_fails_only_that_item(
    make_pool: MakePool, backend_name: str, tmp_path: Path, flaky: Any
) -> None:
    """A chunk looks the instance up once; if building fails, the next item tries again."""
    pool = make_pool(backend_name, workers=1)
    errors: list[BaseException] = []
    results = list(
        pool.map(flaky.where, range(6), chunksize=6, on_error=errors.append, timeout=WAIT)
    )
    assert [type(e) for e in errors] == [PerWorkerError]
    assert [c.value for c in results] == [1, 2, 3, 4, 5]
    assert len(samples.builds(str(tmp_path))) == 1


# --- closing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory", [samples.ManagedResource, samples.recorder_session], ids=["class", "contextmanager"]
)
def test_context_manager_is_entered_when_built_and_exited_at_the_end(
    make_pool: MakePool, backend_name: str, tmp_path: Path, factory: Any
) -> None:
    resource = per_worker(factory, str(tmp_path))
    pool = make_pool(backend_name, workers=2)
    results = list(pool.map(resource.where, range(20), timeout=WAIT))
    assert [c.value for c in results] == list(range(20))
    pool.shutdown(wait=True)
    check_one_build_per_worker(str(tmp_path), results)
    check_all_closed(str(tmp_path))


def test_error_while_closing_is_logged_not_raised(
    make_pool: MakePool, backend_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = per_worker(samples.BadClose, str(tmp_path))
    pool = make_pool(backend_name, workers=1)
    assert pool.submit(bad.where, 1).result(WAIT).value == 1
    with caplog.at_level(logging.WARNING, logger="jobpool"):
        pool.shutdown(wait=True)
    check_all_closed(str(tmp_path))
    messages = [r for r in caplog.records if "per_worker_samples.BadClose" in r.getMessage()]
    assert len(messages) == 1
    assert "closing the per_worker instance made by" in messages[0].getMessage()
    text = messages[0].exc_text or caplog.text
    assert "OSError: the server hung up" in text


@pytest.mark.parametrize("backend_name", PROCESS_BACKENDS)
def test_crashed_worker_closes_nothing(
    make_pool: MakePool, backend_name: str, tmp_path: Path
) -> None:
    recorder = per_worker(samples.Recorder, str(tmp_path))
    pool = make_pool(backend_name, workers=1)
    with pytest.raises(WorkerCrashedError):
        pool.submit(samples.where_then_exit, recorder, 1).result(WAIT)
    after = pool.submit(recorder.where, 2).result(WAIT)  # the replacement builds its own
    pool.shutdown(wait=True)
    built = samples.builds(str(tmp_path))
    assert len(built) == 2
    crashed = next(b.uid for b in built if b.uid != after.uid)
    assert samples.closes(str(tmp_path)) == {after.uid}
    assert crashed not in samples.closes(str(tmp_path))


# --- outside a pool -----------------------------------------------------------------------------


def test_called_in_the_callers_thread_builds_one_there(tmp_path: Path) -> None:
    recorder = per_worker(samples.Recorder, str(tmp_path))
    first, second = recorder.where(1), recorder.where(2)
    assert first.uid == second.uid and first.thread == threading.get_ident()
    seen: list[samples.Call] = []
    thread = threading.Thread(target=lambda: seen.extend([recorder.where(3), recorder.where(4)]))
    thread.start()
    join_or_fail(thread)
    assert seen[0].uid == seen[1].uid != first.uid
    # That thread ended: its instance is closed; this thread's is still open.
    wait_until(lambda: seen[0].uid in samples.closes(str(tmp_path)), "the thread's close")
    assert first.uid not in samples.closes(str(tmp_path))
    assert len(samples.builds(str(tmp_path))) == 2


def test_callers_own_instance_is_closed_at_interpreter_exit(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import per_worker_samples as samples
        from jobpool import per_worker

        recorder = per_worker(samples.Recorder, {str(tmp_path)!r})
        print(recorder.where(5).uid)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    assert samples.closes(str(tmp_path)) == {done.stdout.strip()}


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_forked_child_neither_uses_nor_closes_its_parents_instances(tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    recorder = per_worker(samples.Recorder, str(records))
    ready, stop = threading.Event(), threading.Event()
    parents: list[samples.Call] = []

    def hold() -> None:  # a thread whose instance stays open while the child runs
        parents.append(recorder.where(1))
        ready.set()
        stop.wait(WAIT)

    thread = threading.Thread(target=hold)
    thread.start()
    assert ready.wait(WAIT)
    parents.append(recorder.where(2))  # and this thread's
    answer = tmp_path / "child-uid"
    child = multiprocessing.get_context("fork").Process(
        target=samples.where_to_file, args=(recorder, str(answer))
    )
    child.start()
    child.join(WAIT)
    assert child.exitcode == 0
    child_uid = answer.read_text(encoding="utf-8")
    assert child_uid not in {call.uid for call in parents}  # it built its own
    assert not samples.closes(str(records))  # and closed none of ours
    stop.set()
    join_or_fail(thread)
    wait_until(lambda: parents[0].uid in samples.closes(str(records)), "the thread's close")


# --- the handle itself --------------------------------------------------------------------------


def test_nothing_is_built_until_a_method_runs(tmp_path: Path) -> None:
    recorder = per_worker(samples.Recorder, str(tmp_path))
    method = recorder.where
    assert method is recorder.where
    data = pickle.dumps(recorder)
    copy = pickle.loads(data)
    assert copy.where is method  # unpickled where it was made: the very same handle
    assert not samples.builds(str(tmp_path))
    shown = per_worker(samples.Recorder, "dir", scale=2)
    assert repr(shown) == "per_worker(per_worker_samples.Recorder, 'dir', scale=2)"
    assert method.__name__ == "where"


def test_handle_has_no_attributes_of_its_own(tmp_path: Path) -> None:
    recorder = per_worker(samples.Recorder, str(tmp_path))
    with pytest.raises(AttributeError):
        recorder.__wrapped__  # noqa: B018 - protocols probing dunders must not get a method
    with pytest.raises(AttributeError, match="cannot set 'scale' on a per_worker handle"):
        recorder.scale = 2
    assert not samples.builds(str(tmp_path))


def test_factory_must_be_callable() -> None:
    with pytest.raises(TypeError, match=r"not per_worker\(Database\('path.db'\)\)"):
        per_worker(samples.Build(1, 2, "x"))  # type: ignore[call-overload]


def test_function_bytes_are_made_once_and_keyed(make_pool: MakePool, tmp_path: Path) -> None:
    """The process backend's fast path: stable bytes, a function key, no pickling per job."""
    recorder = per_worker(samples.Recorder, str(tmp_path))
    pool = make_pool("process-fork", workers=1)
    prepare = pool._backend.prepare_function  # type: ignore[attr-defined]
    first, second = prepare(recorder.where), prepare(recorder.where)
    assert first[0] is second[0] and first[1] is not None and first[1] == second[1]
    assert prepare(recorder)[1] is not None  # the handle called as a function, too


def test_unpicklable_factory_arguments_are_named(make_pool: MakePool) -> None:
    pool = make_pool("process-fork", workers=1)
    broken = per_worker(samples.Recorder, threading.Lock())
    for submit in (
        lambda: pool.submit(broken.where, 1),
        lambda: pool.map(broken.where, [1]),
        lambda: pool.submit(samples.combine, broken, broken, 1),
    ):
        with pytest.raises(SerializationError) as caught:
            submit()
        assert caught.value.path is not None
        assert caught.value.path.endswith(".<per_worker args[0]>")
        assert "pass what the factory needs to build it" in str(caught.value)


def test_serialization_error_suggests_per_worker_for_a_method(make_pool: MakePool) -> None:
    pool = make_pool("process-fork", workers=1)
    log = samples.LockedLog(os.devnull)
    with pytest.raises(SerializationError) as caught:
        pool.submit(log.append, "x")
    message = str(caught.value)
    assert caught.value.path in ("fn.__self__.lock", "fn.__self__.file")
    assert "fn is the method 'append' of a 'per_worker_samples.LockedLog' object" in message
    assert "jobpool.per_worker(LockedLog, <its arguments>), then pass handle.append" in message
    log.close()


def test_per_worker_error_survives_pickling() -> None:
    error = PerWorkerError.from_factory("mod.connect", "worker process 1", ValueError("no"))
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is PerWorkerError and str(copy) == str(error)
    assert copy.factory == "mod.connect" and repr(copy.exception) == "ValueError('no')"
    unpicklable = PerWorkerError.from_factory("f", "here", _Unpicklable("x"))
    assert pickle.loads(pickle.dumps(unpicklable)).exception is None


class _Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("no")


# --- Dask -----------------------------------------------------------------------------------------


def test_dask_one_instance_per_worker_closed_with_the_pool(
    make_pool: MakePool, tmp_path: Path
) -> None:
    recorder = per_worker(samples.Recorder, str(tmp_path), scale=2)
    pool = make_pool("dask", 4)
    calls = [pool.submit(recorder.where, i) for i in range(40)]
    results = [f.result(WAIT) for f in calls] + list(
        pool.map(recorder.where, range(100), timeout=WAIT)
    )
    assert [c.value for c in results] == [2 * i for i in [*range(40), *range(100)]]
    built = samples.builds(str(tmp_path))
    # One per Dask worker (a process with several task threads), whatever thread asked first.
    assert len({b.pid for b in built}) == len(built)
    assert {c.pid for c in results} == {b.pid for b in built}
    by_pid = {b.pid: b.uid for b in built}
    assert all(c.uid == by_pid[c.pid] for c in results)
    assert not samples.closes(str(tmp_path))
    pool.shutdown(wait=True)  # the cluster runs on; the pool's instances are closed
    check_all_closed(str(tmp_path))


def test_dask_factory_that_raises_and_unpicklable_instance(
    make_pool: MakePool, tmp_path: Path, flaky: Any
) -> None:
    log = per_worker(samples.LockedLog, str(tmp_path / "log.txt"))
    pool = make_pool("dask", 1)
    with pytest.raises(PerWorkerError) as caught:
        pool.submit(flaky.where, 1).result(WAIT)
    assert isinstance(caught.value.exception, ValueError)
    assert pool.submit(flaky.where, 2).result(WAIT).value == 2
    assert len(list(pool.map(log.append, [f"line {i}" for i in range(10)], timeout=WAIT))) == 10
    pool.shutdown(wait=True)
    lines = (tmp_path / "log.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(lines) == sorted(f"line {i}" for i in range(10))
    check_all_closed(str(tmp_path))
