"""Memory on the process backend: a job over its job_memory_limit fails alone, a worker over
max_worker_memory is replaced after its job, and a worker the kernel's OOM killer took is named.

Each limit test runs under both enforcements where this machine has them: a memory cgroup per
worker (``cgroup``) and sampling by the dispatcher (``sampled``, the fallback, forced here by
having no controller). The module checks after every test that no cgroup it made is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobs
import memory_jobs
from conftest import PROCESS, PROCESS_BACKENDS, WAIT, MakePool, wait_until
from jobpool import MemoryLimitError, Pool, WorkerCrashedError, _platform
from jobpool._memory_size import MIN_MEMORY, parse_memory
from jobpool._process import _cgroups

MB = 1 << 20
LIMIT = 160 * MB

CONTROLLER = _cgroups.controller()
NO_CGROUP = "no memory cgroup can be made here (needs a writable memory controller, v1 or v2)"


def _ours() -> list[str]:
    """The cgroups this process made that still exist."""
    if CONTROLLER is None:
        return []
    prefix = f"{_cgroups.PREFIX}{os.getpid()}-"
    return [name for name in os.listdir(CONTROLLER.parent) if name.startswith(prefix)]


@pytest.fixture(autouse=True)
def no_cgroup_left() -> Iterator[None]:
    """Every cgroup a test made is removed once its pool is shut down."""
    yield
    wait_until(lambda: not _ours(), f"the cgroups {_ours()} to be removed")


@pytest.fixture(params=["cgroup", "sampled"])
def enforcement(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "cgroup":
        if not _platform.CGROUPS:
            pytest.skip("cgroups are turned off here (JOBPOOL_DISABLE or JOBPOOL_PORTABLE)")
        if CONTROLLER is None:
            pytest.skip(NO_CGROUP)
    else:
        monkeypatch.setattr(_cgroups, "controller", lambda: None)
    return str(request.param)


# --- job_memory_limit ----------------------------------------------------------------------------


@pytest.mark.linux_only("proc")
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_job_over_its_limit_fails_alone(
    make_pool: MakePool, backend: str, enforcement: str, gate: jobs.StartGate
) -> None:
    pool = make_pool(backend, 2, job_memory_limit=LIMIT)
    held = pool.submit(jobs.gate_job, gate.address, "held", "kept")
    gate.wait_for("held")
    greedy = pool.submit(memory_jobs.grow, 4 * LIMIT // MB)
    with pytest.raises(MemoryLimitError) as caught:
        greedy.result(WAIT)
    error = caught.value
    assert error.limit == LIMIT and isinstance(error, MemoryError)
    assert "160.0 MiB" in str(error) and error.how in str(error)
    assert error.reached is not None and error.reached >= LIMIT * 0.9
    assert ("sampled" in error.how) == (enforcement == "sampled")
    # The job that ran beside it was not touched, and the pool takes the next job.
    gate.release("held")
    assert held.result(WAIT) == "kept"
    assert pool.submit(memory_jobs.grow, 40).result(WAIT) == 40
    stats = pool.stats()
    assert stats.over_memory_limit == 1 and stats.failed == 1 and stats.worker_restarts == 1


@pytest.mark.linux_only("proc")
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_job_sent_straight_to_an_idle_worker_is_held_to_its_limit(
    make_pool: MakePool, backend: str, enforcement: str
) -> None:
    """A job submitted while a worker waits goes to it from the caller's thread, not through
    the dispatcher: the dispatcher must still sample it (it slept through such a job once)."""
    pool = make_pool(backend, 1, job_memory_limit=LIMIT)
    assert pool.submit(jobs.square, 3).result(WAIT) == 9  # the worker is up, and idle
    wait_until(lambda: pool.stats().running == 0, "the worker to be idle")
    with pytest.raises(MemoryLimitError):
        pool.submit(memory_jobs.grow, 4 * LIMIT // MB).result(WAIT)


@pytest.mark.linux_only("proc")
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_job_over_its_limit_is_retried_in_a_fresh_worker(
    make_pool: MakePool, backend: str, enforcement: str, tmp_path: Path
) -> None:
    """With retries, a MemoryLimitError is a failure like another: the next attempt runs in a
    new worker under the same limit, and the counts say it once, by the last attempt."""
    pool = make_pool(backend, 1, job_memory_limit=LIMIT, retries=1, retry_delay=0)
    marker = str(tmp_path / "grew")
    future = pool.submit(memory_jobs.grow_the_first_time, 4 * LIMIT // MB, marker)
    assert future.result(WAIT) == 0
    wait_until(lambda: pool.stats().done == 1, "the pool to count the job")
    stats = pool.stats()
    assert (stats.retried, stats.failed, stats.over_memory_limit) == (1, 0, 0)
    assert stats.worker_restarts == 1
    # Without retries left, the limit is final, and counted once.
    again = pool.options(retries=0).submit(memory_jobs.grow, 4 * LIMIT // MB)
    with pytest.raises(MemoryLimitError) as info:
        again.result(WAIT)
    assert not hasattr(info.value, "jobpool_attempts") or len(info.value.jobpool_attempts) <= 1
    wait_until(lambda: pool.stats().failed == 1, "the pool to count the failure")
    assert pool.stats().over_memory_limit == 1


@pytest.mark.linux_only("proc")
@pytest.mark.parametrize("backend", PROCESS)
def test_a_fast_job_is_stopped_before_a_quarter_over(
    make_pool: MakePool, backend: str, enforcement: str, tmp_path: Path
) -> None:
    """At ~500 MB/s, the job itself says how far it got: under 1.25 times its limit. The
    caller holds more than the limit, which a fork worker inherits: that is not the job's."""
    progress = str(tmp_path / "progress")
    ballast = bytearray(LIMIT + 40 * MB)
    ballast[::4096] = b"\1" * len(ballast[::4096])
    pool = make_pool(backend, 1, job_memory_limit=LIMIT)
    future = pool.submit(memory_jobs.grow, 1000, 4, 500.0, progress)
    with pytest.raises(MemoryLimitError):
        future.result(WAIT)
    allocated = int(Path(progress).read_text())
    assert 0.5 * LIMIT < allocated < 1.25 * LIMIT
    del ballast


@pytest.mark.linux_only("proc")
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_child_the_job_forked_counts_and_is_stopped(
    make_pool: MakePool, backend: str, enforcement: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child"
    pool = make_pool(backend, 1, job_memory_limit=LIMIT)
    with pytest.raises(MemoryLimitError):
        pool.submit(memory_jobs.grow_in_child, 4 * LIMIT // MB, str(pid_file)).result(WAIT)
    child = int(pid_file.read_text())
    wait_until(lambda: not _exists(child), f"the job's child {child} to be gone")
    assert pool.submit(jobs.square, 3).result(WAIT) == 9


@pytest.mark.linux_only("proc")
@pytest.mark.parametrize("backend", PROCESS)
def test_an_external_program_the_job_ran_counts_and_is_stopped(
    make_pool: MakePool, backend: str, enforcement: str
) -> None:
    pool = make_pool(backend, 1, job_memory_limit=LIMIT)
    with pytest.raises(MemoryLimitError):
        pool.submit(memory_jobs.grow_in_program, 4 * LIMIT // MB).result(WAIT)
    assert pool.submit(jobs.square, 4).result(WAIT) == 16


@pytest.mark.linux_only("proc")
@pytest.mark.parametrize("backend", PROCESS)
def test_a_job_that_execs_another_program_in_its_worker_is_held_too(
    make_pool: MakePool, backend: str, enforcement: str
) -> None:
    """os.execv replaces the worker with the program: the same process, still watched."""
    pool = make_pool(backend, 1, job_memory_limit=LIMIT)
    with pytest.raises(MemoryLimitError):
        pool.submit(memory_jobs.exec_and_grow, 4 * LIMIT // MB).result(WAIT)
    assert pool.submit(jobs.square, 5).result(WAIT) == 25


@pytest.mark.linux_only("proc")
@pytest.mark.parametrize("backend", PROCESS)
def test_options_set_the_limit_per_job(make_pool: MakePool, backend: str, enforcement: str) -> None:
    pool = make_pool(backend, 1)
    limited = pool.options(job_memory_limit="160 MiB")
    with pytest.raises(MemoryLimitError) as caught:
        limited.submit(memory_jobs.grow, 400).result(WAIT)
    assert caught.value.limit == LIMIT
    # The same worker's next job has no limit; a map's chunks get the view's.
    assert pool.submit(memory_jobs.grow, 400).result(WAIT) == 400
    assert list(limited.map(memory_jobs.grow, [16, 24], timeout=WAIT)) == [16, 24]
    with pytest.raises(MemoryLimitError):
        list(limited.map(memory_jobs.grow, [400], timeout=WAIT))


@pytest.mark.linux_only("proc", "cgroups")
@pytest.mark.parametrize("backend", PROCESS)
def test_a_job_that_leaves_its_cgroup_escapes_the_kernels_limit(
    make_pool: MakePool, backend: str
) -> None:
    """Documented: a job that may write to the cgroup tree (root) can move its worker out of
    its group, and the kernel then no longer holds it. Its group is still removed."""
    if CONTROLLER is None:
        pytest.skip(NO_CGROUP)
    pool = make_pool(backend, 1, job_memory_limit=LIMIT)
    assert pool.submit(memory_jobs.leave_cgroup_and_grow, 2 * LIMIT // MB).result(WAIT) == 320


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


# --- absurd values, and backends that cannot honour them -----------------------------------------


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        (500, ValueError, "below the 32.0 MiB"),
        (0, ValueError, "below"),
        (-(1 << 30), ValueError, "below"),
        ("500", ValueError, "give the amount with its unit"),
        ("2 GB!", ValueError, "not an amount of memory"),
        ("lots", ValueError, "not an amount of memory"),
        ("1e400 GiB", ValueError, "not an amount of memory"),
        ("999 TiB", ValueError, "more than this machine's memory"),
        (1 << 62, ValueError, "more than this machine's memory"),
        (2.5e9, TypeError, "not float"),
        (True, TypeError, "not bool"),
        ([1], TypeError, "not list"),
    ],
)
def test_absurd_amounts_are_refused_naming_the_fix(
    value: object, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match="job_memory_limit") as caught:
        parse_memory("job_memory_limit", value)
    assert words in str(caught.value)


def test_amounts_are_read_as_written() -> None:
    assert parse_memory("x", "2 GiB") == 2 << 30
    assert parse_memory("x", "500MB") == 500_000_000
    assert parse_memory("x", "1.5gib") == 3 << 29
    assert parse_memory("x", MIN_MEMORY) == MIN_MEMORY
    assert parse_memory("x", None) is None


@pytest.mark.parametrize("backend", PROCESS)
def test_a_refused_option_loses_nothing_already_submitted(
    make_pool: MakePool, backend: str
) -> None:
    pool = make_pool(backend, 1)
    futures = [pool.submit(jobs.square, i) for i in range(5)]
    with pytest.raises(ValueError, match="below"):
        pool.options(job_memory_limit=100)
    with pytest.raises(TypeError):
        Pool(1, "process", max_worker_memory=1.5)
    assert [f.result(WAIT) for f in futures] == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("option", ["job_memory_limit", "max_worker_memory"])
def test_threads_and_dask_refuse_the_options(option: str) -> None:
    with pytest.raises(ValueError, match=f"{option}= applies only to backend='process'.*thread"):
        Pool(2, "thread", **{option: "1 GiB"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="memory_limit="):
        Pool(2, "dask", **{option: "1 GiB"})  # type: ignore[arg-type]


def test_a_thread_pool_refuses_a_limit_in_options() -> None:
    with Pool(2, "thread") as pool:
        with pytest.raises(ValueError, match="threads share one process"):
            pool.options(job_memory_limit="1 GiB")
        assert pool.options(timeout=5).submit(jobs.square, 2).result(WAIT) == 4


# --- max_worker_memory ---------------------------------------------------------------------------


@pytest.mark.linux_only("proc")
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_leaky_worker_is_replaced_and_memory_stays_bounded(
    make_pool: MakePool, backend: str
) -> None:
    """150 jobs that each keep 20 MB: every result comes back, no worker grows past the
    threshold by more than one job's leak, and the replacements (about 30) are counted."""
    most = 80 * MB
    # A forked worker holds the caller's memory too; that is not counted against it.
    inherited = memory_jobs.private_resident() if backend.endswith("-fork") else 0
    pool = make_pool(backend, 2, max_worker_memory=most)
    jobs = 150
    sizes = list(pool.map(memory_jobs.leak, [20] * jobs, chunksize=1, timeout=WAIT * 4))
    assert len(sizes) == jobs
    # One job's leak past it at most (and page rounding).
    assert max(sizes) < inherited + most + 20 * MB + 8 * MB
    stats = pool.stats()
    assert stats.done == jobs and stats.failed == 0
    assert stats.recycled_for_memory >= jobs * 20 * MB // (most + 20 * MB)
    assert stats.worker_restarts >= stats.recycled_for_memory


@pytest.mark.linux_only("proc")
@pytest.mark.parametrize("backend", PROCESS)
def test_shared_memory_a_worker_maps_does_not_count(make_pool: MakePool, backend: str) -> None:
    """A 200 MB argument read in place through shared memory (and, under fork, the caller's
    memory the worker inherited) leaves a worker under a 100 MiB max_worker_memory."""
    np = pytest.importorskip("numpy")
    array = np.ones(200 * MB // 8)  # through shared memory: above shared_memory_threshold
    pool = make_pool(backend, 1, max_worker_memory="100 MiB")
    for _ in range(3):
        assert pool.submit(memory_jobs.read_array, array).result(WAIT) == 200 * MB // 8
    assert pool.stats().recycled_for_memory == 0
    assert pool.submit(memory_jobs.leak, 120).result(WAIT) > 100 * MB  # but its own memory does
    assert pool.stats().recycled_for_memory == 1


# --- deaths by the kernel's out-of-memory killer -------------------------------------------------

_OOM_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    with open({procs!r}, "w") as f:
        f.write("0")  # this process, and so its workers, into the small group
    import jobpool, memory_jobs
    with jobpool.Pool(1, "process", **{options}) as pool:
        try:
            pool.submit(memory_jobs.grow, 600).result(60)
        except jobpool.WorkerCrashedError as e:
            print("CRASHED", e.signal, e)
        print("NEXT", pool.submit(memory_jobs.grow, 16).result(60))
    """
)


@pytest.mark.linux_only("proc", "cgroups")
@pytest.mark.parametrize(
    "options",
    [{}, {"job_memory_limit": "1 GiB"}],
    ids=["no limit", "a limit the group runs out before"],
)
def test_a_worker_the_oom_killer_took_is_named(options: dict[str, str]) -> None:
    """The caller's group (300 MB) runs out: the kernel kills the worker. That is named as the
    OOM killer's doing, and is no MemoryLimitError even when the job has a limit (1 GiB) of
    its own, whose group the kernel tells of the out-of-memory event too."""
    if CONTROLLER is None or CONTROLLER.version != 1:
        pytest.skip(NO_CGROUP + " (this test makes a v1 group)")
    group = Path(CONTROLLER.parent) / f"jobpool-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(300 * MB))
        script = _OOM_SCRIPT.format(
            tests=str(Path(__file__).parent), procs=str(group / "cgroup.procs"), options=options
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT, env=env
        )
        assert "CRASHED SIGKILL" in done.stdout, done.stdout + done.stderr
        assert "out-of-memory killer" in done.stdout and "oom_kill counter" in done.stdout
        assert "NEXT 16" in done.stdout
    finally:
        wait_until(lambda: not (group / "cgroup.procs").read_text().strip(), "the group to empty")
        group.rmdir()


def test_a_crash_without_the_oom_killer_says_nothing_of_it(make_pool: MakePool) -> None:
    pool = make_pool("process-forkserver", 1)
    with pytest.raises(WorkerCrashedError) as caught:
        pool.submit(jobs.kill_self).result(WAIT)
    assert "out-of-memory" not in str(caught.value)


# --- cleanup when the caller is killed -----------------------------------------------------------

_KILLED_CALLER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import jobpool, jobs
    pool = jobpool.Pool(2, "process", job_memory_limit="200 MiB")
    futures = [pool.submit(jobs.sleep_for, 60) for _ in range(2)]
    print(os.getpid(), flush=True)
    sys.stdin.readline()
    """
)


@pytest.mark.linux_only("proc", "cgroups")
def test_a_killed_caller_leaves_no_cgroup() -> None:
    """Its workers see it die, leave their groups and remove them, and the empty groups it made
    (a caller killed after making a worker's group, before moving the worker in)."""
    if CONTROLLER is None:
        pytest.skip(NO_CGROUP)
    script = _KILLED_CALLER.format(tests=str(Path(__file__).parent))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    caller = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        assert caller.stdout is not None
        pid = int(caller.stdout.readline())
        prefix = f"{_cgroups.PREFIX}{pid}-"

        def theirs() -> list[str]:
            assert CONTROLLER is not None
            return [n for n in os.listdir(CONTROLLER.parent) if n.startswith(prefix)]

        def occupied() -> int:
            assert CONTROLLER is not None
            held = 0
            for name in theirs():
                with contextlib.suppress(OSError):
                    procs = Path(CONTROLLER.parent, name, "cgroup.procs").read_text()
                    held += bool(procs.split())
            return held

        wait_until(lambda: occupied() == 2, "both workers to be in their groups")
        # As if the caller had died between making a third group and moving a worker in:
        assert CONTROLLER is not None
        Path(CONTROLLER.parent, f"{prefix}never-entered").mkdir()
        caller.send_signal(signal.SIGKILL)
        caller.wait(WAIT)
        wait_until(lambda: not theirs(), "the killed caller's groups to be removed")
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait(WAIT)


@pytest.mark.linux_only("proc", "cgroups")
def test_the_next_pool_removes_the_empty_cgroups_of_a_caller_that_is_gone(
    make_pool: MakePool,
) -> None:
    """A caller SIGKILLed before its workers could leave their groups (a worker killed with
    it): the next process to make a group removes them, leaving those of the living alone."""
    if CONTROLLER is None:
        pytest.skip(NO_CGROUP)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = Path(CONTROLLER.parent) / f"{_cgroups.PREFIX}{int(gone.stdout)}-0"
    living = Path(CONTROLLER.parent) / f"{_cgroups.PREFIX}1-0"  # pid 1 lives
    stale.mkdir()
    living.mkdir()
    try:
        fresh = _cgroups.Controller(CONTROLLER.version, CONTROLLER.parent)
        with subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE) as proc:
            group = fresh.make(proc.pid)
            assert group is not None
            assert not stale.exists() and living.exists()
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(WAIT)
            group.remove(kill_left=False)
    finally:
        for path in (stale, living):
            if path.exists():
                path.rmdir()


def test_a_v2_group_is_driven_through_its_own_files(tmp_path: Path) -> None:
    """cgroup v2 cannot be made on every test machine (this one may mount it without the memory
    controller), so its files are checked on a directory laid out as the kernel lays one out."""
    for name, text in {
        "cgroup.procs": "",
        "memory.oom.group": "0",
        "memory.max": "max",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n",
        "memory.peak": str(170 * MB),
    }.items():
        (tmp_path / name).write_text(text)
    group = _cgroups.WorkerCgroup(2, str(tmp_path))
    group.prepare(4242)
    assert group.notify_fd is None  # v2: oom.group kills the whole group; its exit tells
    assert (tmp_path / "memory.oom.group").read_text() == "1"
    assert (tmp_path / "cgroup.procs").read_text() == "4242"
    assert group.set_limit(LIMIT) and (tmp_path / "memory.max").read_text() == str(LIMIT)
    assert group.set_limit(None) and (tmp_path / "memory.max").read_text() == "max"
    assert group.oom_kills() == 1 and group.peak() == 170 * MB
    assert not group.hit_own_limit()  # a group above it ran out
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert group.hit_own_limit() and not group.hit_own_limit()  # once per hit
    assert group.reached == 170 * MB
    assert "memory.events" in group.how() and "oom_kill counter at 1" in group.how()


@pytest.mark.linux_only("proc", "cgroups")
@pytest.mark.parametrize("backend", PROCESS)
def test_the_groups_go_where_jobpool_memory_cgroup_says(
    make_pool: MakePool, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The strict form where the caller's own group cannot have groups below it (v2): a group
    set up for them, named by JOBPOOL_MEMORY_CGROUP."""
    if CONTROLLER is None:
        pytest.skip(NO_CGROUP)
    home = Path(CONTROLLER.parent) / f"chosen-{os.getpid()}"
    home.mkdir()
    try:
        monkeypatch.setenv("JOBPOOL_MEMORY_CGROUP", str(home))
        monkeypatch.setattr(_cgroups, "_looked", False)
        monkeypatch.setattr(_cgroups, "_controller", None)
        pool = make_pool(backend, 1, job_memory_limit=LIMIT)
        inside = pool.submit(memory_jobs.cgroup_of_self).result(WAIT)
        assert Path("/sys/fs/cgroup/memory" + inside).parent == home
        with pytest.raises(MemoryLimitError):
            pool.submit(memory_jobs.grow, 400).result(WAIT)
        pool.shutdown()
        wait_until(lambda: not _subgroups(home), "its groups to be removed")
    finally:
        home.rmdir()


def _subgroups(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.is_dir()]


def test_without_proc_the_options_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobpool import _platform

    monkeypatch.setattr(_platform, "PROC", False)
    with pytest.raises(ValueError, match="max_worker_memory= needs Linux"):
        Pool(1, "process", max_worker_memory="1 GiB")
    with Pool(1, "process") as pool, pytest.raises(ValueError, match="needs Linux"):
        pool.options(job_memory_limit="1 GiB")


@pytest.mark.linux_only("proc", "cgroups")
def test_a_group_that_refuses_the_limit_is_sampled_instead(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cgroup write that fails (not the EBUSY of a group over the new limit) does not leave
    the job unlimited, nor its worker waiting for a job that was never sent."""
    if CONTROLLER is None:
        pytest.skip(NO_CGROUP)

    def refuse(self: _cgroups.WorkerCgroup, limit: object) -> bool:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(_cgroups.WorkerCgroup, "set_limit", refuse)
    pool = make_pool("process-forkserver", 1, job_memory_limit=LIMIT)
    with pytest.raises(MemoryLimitError, match="sampled"):
        pool.submit(memory_jobs.grow, 400).result(WAIT)
    assert pool.submit(memory_jobs.grow, 16).result(WAIT) == 16
