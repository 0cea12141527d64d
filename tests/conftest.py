"""What every test shares, once: constants, the pool factory, the gate, deadlines, and guards.

``make_pool`` builds pools on the thread backend, on the process backend under each start method
and on Dask (the run's one local cluster); every pool it made is shut down after the test, and
the guard then checks that no child process of this test run is left behind. ``gate`` is the one
way jobs report that they started and wait to be released (``jobs.StartGate``). Every blocking
call waits at most ``WAIT`` (``join_or_fail``, ``within``, ``wait_until``, ``wait_blocked_in``);
a test that hangs anyway fails at pytest-timeout's limit. The run also fails for an exception in
any thread, an error the pool logs, and a missing test dependency (see below).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import select
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, TypeVar

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import jobs
from jobpool import Pool

START_METHODS = [
    m for m in ("forkserver", "spawn", "fork") if m in multiprocessing.get_all_start_methods()
]
LOCAL_BACKENDS = ["thread", *(f"process-{m}" for m in START_METHODS)]
# The process backend under every start method.
PROCESS_BACKENDS = [b for b in LOCAL_BACKENDS if b.startswith("process-")]
# Fast subset for the bulk of the behaviour tests: one start method that re-imports (spawn-like)
# and fork. The full matrix runs where the start method matters.
BACKENDS = ["thread", "process-forkserver", "process-fork"]
PROCESS = [b for b in BACKENDS if b.startswith("process-")]  # the fast subset's process ones

MakePool = Callable[..., Pool]  # the make_pool fixture

WAIT = 60  # seconds; a generous ceiling that fails loudly instead of hanging

T = TypeVar("T")


def join_or_fail(thread: threading.Thread, seconds: float = WAIT) -> None:
    """``thread.join()`` with a deadline: the test fails, naming the thread, if it is not over."""
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"thread {thread.name!r} did not end within {seconds} s")


def within(call: Callable[..., T], *args: Any, seconds: float = WAIT, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` with a deadline, for a blocking call that takes no timeout (the
    multiprocessing API's ``map``, ``apply``, ``join``; ``list`` of an iterator).

    The call runs in a helper thread; its result or exception comes back here. If it is not done
    in time, the test fails, naming the call (the helper thread is left to the timeout).
    """
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, call(*args, **kwargs)))
        except BaseException as exc:
            outcome.append((False, exc))

    name = getattr(call, "__qualname__", repr(call))
    helper = threading.Thread(target=run, name=f"within {name}", daemon=True)
    helper.start()
    helper.join(seconds)
    if not outcome:
        pytest.fail(f"{name}() did not return within {seconds} s")
    returned, value = outcome[0]
    if not returned:
        raise value
    return value  # type: ignore[no-any-return]


def wait_until(condition: Callable[[], bool], what: str, seconds: float = WAIT) -> None:
    """Wait (with a deadline) for a condition that another process or thread makes true.

    For state nothing signals to the test (records a worker's close writes, the Dask pool's
    books): this looks again every few milliseconds and fails, naming ``what``, at the deadline.
    """
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def wait_blocked_in(thread: threading.Thread, function: str, seconds: float = WAIT) -> None:
    """Wait until ``thread`` waits for a lock inside ``function``; fail if it gets past it.

    "Still blocked" judged by how long a thread has not returned says nothing on a busy machine:
    it may not have reached the call yet. This looks at the thread's stack instead: it is
    blocked once it sits in a ``threading`` wait with ``function`` among its callers.
    """
    deadline = time.monotonic() + seconds
    while True:
        frame = sys._current_frames().get(thread.ident or -1)
        if frame is None or not thread.is_alive():
            pytest.fail(f"thread {thread.name!r} ended instead of waiting in {function}()")
        if _waiting_in(frame, function):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"thread {thread.name!r} did not wait in {function}() within {seconds} s")
        time.sleep(0.001)  # a poll of the thread's state, with the deadline above


def _waiting_in(frame: Any, function: str) -> bool:
    if frame.f_code.co_filename != threading.__file__ or frame.f_code.co_name != "wait":
        return False  # not blocked in Condition.wait (which Semaphore and Event use)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def pool_kwargs(backend: str) -> dict[str, Any]:
    if not isinstance(backend, str):  # make_pool(2): the backend comes first
        raise TypeError(f"a backend name comes first, such as 'thread' or 'dask', not {backend!r}")
    if backend.startswith("process-"):
        return {"backend": "process", "start_method": backend.split("-", 1)[1]}
    return {"backend": backend}


@pytest.fixture
def make_pool(request: pytest.FixtureRequest) -> Iterator[MakePool]:
    """``make_pool(backend, workers, **options)``: a pool shut down after the test. ``"dask"``
    pools use the run's shared cluster unless given an ``address`` or a ``client``."""
    pools: list[Pool] = []

    def make(backend: str, workers: int = 2, **kwargs: Any) -> Pool:
        if backend == "dask" and "address" not in kwargs and "client" not in kwargs:
            kwargs["address"] = request.getfixturevalue("dask_address")
        pool = Pool(workers, **pool_kwargs(backend), **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def gate() -> Iterator[jobs.StartGate]:
    """Jobs that run ``jobs.gate_job(gate.address, tag)`` report here and wait to be released."""
    with jobs.StartGate() as start_gate:
        yield start_gate


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Every test that starts processes must leave none behind (the fork server excepted), nor
    a named shared-memory segment (without memfd: ``JOBPOOL_PORTABLE=1``)."""
    yield
    assert_no_leftover_processes()
    assert_no_named_segments()


def assert_no_leftover_processes() -> None:
    leftovers = [
        child
        for child in multiprocessing.active_children()
        if not child.name.startswith("SyncManager")
    ]
    if leftovers:
        for child in leftovers:
            child.kill()
            child.join(5)
        pytest.fail(f"processes left behind: {leftovers}")


def assert_no_named_segments() -> None:
    """This process's named-segment directory is empty once its pools are shut down: every
    argument's name was unlinked when its job resolved, every result's when it arrived."""
    from jobpool._process import _named_memory

    directory = _named_memory._directory
    if directory is None or not os.path.isdir(directory.path):
        return
    deadline = time.monotonic() + WAIT
    while os.listdir(directory.path):
        if time.monotonic() > deadline:
            left = os.listdir(directory.path)
            for name in left:
                os.unlink(os.path.join(directory.path, name))
            pytest.fail(f"named shared-memory segments left in {directory.path}: {left}")
        time.sleep(0.005)


EXCLUDED = "excluded on purpose: "


def skipped_case(reason: str) -> Any:
    """A unittest case that is skipped with ``reason`` (for the stdlib suites' exclusions)."""
    import unittest

    @unittest.skip(EXCLUDED + reason)
    def test(self: Any) -> None:  # pragma: no cover - never runs
        pass

    return test


# --- what the tests need is there, or the run fails ---------------------------------------------


def _require_test_dependencies(config: pytest.Config) -> None:
    """Every package of the project's ``test`` extra is installed, or the run stops at once.

    A test that skipped itself for a missing declared dependency would pass the run without
    testing what it names (the Dask backend, typing, progress bars, numpy buffers).
    """
    project = Path(str(config.inipath or ""))
    if project.name != "pyproject.toml":  # run with another config file: use the project's own
        project = Path(__file__).resolve().parent.parent / "pyproject.toml"
    missing = missing_requirements(project, "test")
    if missing:
        raise pytest.UsageError(
            "the tests need packages that are not installed: "
            + ", ".join(missing)
            + f' (declared in the "test" extra of {project}; install them with'
            ' python -m pip install ".[test]")'
        )


def missing_requirements(project: Path, extra: str) -> list[str]:
    """The requirements of ``extra`` in the ``project`` file that the environment lacks."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pytest depends on tomli before 3.11, and on packaging
        import tomli as tomllib
    from importlib import metadata

    from packaging.requirements import Requirement

    if not project.is_file():
        return []
    with project.open("rb") as file:
        extras = tomllib.load(file).get("project", {}).get("optional-dependencies", {})
    missing = []
    for line in extras.get(extra, []):
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{line} (found {version})")
    return missing


# --- an exception in any thread fails the test it happened in -----------------------------------
#
# A helper thread that raises reaches threading.excepthook. pytest owns that hook (from 8.4 on it
# sets it once at start-up, before 8.4 around each test phase, replacing any hook set here) and
# reports the exception as PytestUnhandledThreadExceptionWarning in the phase it happened in;
# pyproject.toml's ``filterwarnings`` turns that warning into an error, so the test fails under
# every pytest from 7 on. The pool's own threads catch what kills them (to fail the waiting
# futures with the reason) and log it on the "jobpool" logger at ERROR: the hooks below fail the
# test for that too. (test_harness.py checks both in a pytest run of its own.)


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_pool_errors = _ErrorRecords()


def pytest_configure(config: pytest.Config) -> None:
    _require_test_dependencies(config)
    logging.getLogger("jobpool").addHandler(_pool_errors)


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger("jobpool").removeHandler(_pool_errors)


def _fail_on_pool_errors(item: pytest.Item) -> None:
    """An ERROR the pool logged (its dispatcher died, a worker could not be stopped, a callback
    raised) fails the test phase it happened in, unless the test is marked ``logs_errors``
    because it causes one on purpose."""
    with _pool_errors.lock or contextlib.nullcontext():  # the lock emit() runs under
        records, _pool_errors.records = _pool_errors.records, []
    if records and item.get_closest_marker("logs_errors") is None:
        pytest.fail(
            "the pool logged errors:\n" + "\n".join(_format_record(record) for record in records),
            pytrace=False,
        )


def _format_record(record: logging.LogRecord) -> str:
    text = f"{record.name} {record.levelname} in thread {record.threadName}: {record.getMessage()}"
    if record.exc_info:
        text += "\n" + "".join(traceback.format_exception(*record.exc_info))
    return text


@pytest.hookimpl(trylast=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _fail_on_pool_errors(item)


@pytest.hookimpl(trylast=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    _fail_on_pool_errors(item)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    _fail_on_pool_errors(item)


# --- slow tests: marked, and run only when asked (CI asks) ---------------------------------------

RUN_SLOW = os.environ.get("JOBPOOL_RUN_SLOW", "") not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.slow`` tests run with JOBPOOL_RUN_SLOW=1 (before a merge) or when
    selected with ``-m slow``; a plain ``python -m pytest -q`` leaves them out.

    ``@pytest.mark.linux_only("memfd", ...)`` marks a test about a Linux-only mechanism itself
    (the names are ``jobpool._platform.MECHANISMS``): it is skipped, with that reason, where one
    of them is missing or turned off (``JOBPOOL_PORTABLE=1``, ``JOBPOOL_DISABLE=...``)."""
    _skip_linux_only(items)
    _mark_unswitched(items)
    if RUN_SLOW or "slow" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason=SLOW_REASON)
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Set aside what the collection made (every test module, CPython's suites...) from the
    garbage collector: a full collection then looks at what the tests make, not at the whole
    session, and the tests that collect after each step (CPython's ``test_free_reference``
    among them, 30 collections each) took 4 s each instead of a fraction of one."""
    gc.collect()
    gc.freeze()


SLOW_REASON = "slow: set JOBPOOL_RUN_SLOW=1 or select -m slow"
LINUX_ONLY = "linux_only"


# Backends and test files with none of the mechanisms ``JOBPOOL_PORTABLE`` switches off on their
# path (memfd, pidfd, epoll... are the process backend's): a thread or Dask pool, the docs' pages.
_UNSWITCHED_BACKENDS = ("thread", "dask")
_UNSWITCHED_FILES = ("test_docs.py", "test_dask.py")
UNSWITCHED = "unswitched"


def _mark_unswitched(items: list[pytest.Item]) -> None:
    """Mark ``unswitched`` the tests that run the same code whatever the switches say, so that
    CI's second run with ``JOBPOOL_PORTABLE=1`` leaves them out (``-m "not unswitched"``): the
    first run covered them."""
    marker = getattr(pytest.mark, UNSWITCHED)
    for item in items:
        params = getattr(item, "callspec", None)
        backend = params.params.get("backend") if params is not None else None
        if (
            isinstance(backend, str) and backend.startswith(_UNSWITCHED_BACKENDS)
        ) or item.path.name in _UNSWITCHED_FILES:
            item.add_marker(marker)


def _skip_linux_only(items: list[pytest.Item]) -> None:
    from jobpool import _platform

    in_use = _platform.describe()
    for item in items:
        for marker in item.iter_markers(LINUX_ONLY):
            unknown = [name for name in marker.args if name not in in_use]
            if unknown or not marker.args:
                raise pytest.UsageError(
                    f"{item.nodeid}: linux_only takes mechanism names among "
                    f"{', '.join(_platform.MECHANISMS)}, not {marker.args!r}"
                )
            off = [name for name in marker.args if not in_use[name]]
            if off:
                reason = (
                    f"{LINUX_ONLY}({', '.join(off)}): about a Linux-only mechanism, missing here "
                    "or turned off (JOBPOOL_PORTABLE, JOBPOOL_DISABLE)"
                )
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Skips in a few lines, none left out: the slow tests and the stdlib suites' deliberate
    exclusions as one count each, every other skip with its reason and how many share it.

    pyproject's ``addopts`` lists only failures and errors one per line (``-rfE``); ``-rs``
    still lists every skip."""
    slow = excluded = 0
    others: dict[str, int] = {}
    linux_only: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        if not isinstance(longrepr, tuple) or len(longrepr) != 3:
            continue
        path, line, reason = longrepr
        reason = str(reason).removeprefix("Skipped: ")
        if reason == SLOW_REASON:
            slow += 1
        elif reason.startswith(EXCLUDED):
            excluded += 1
        elif reason.startswith(LINUX_ONLY):
            which = reason.partition(":")[0]
            linux_only[which] = linux_only.get(which, 0) + 1
        else:
            where = f"{Path(str(path)).name}:{line + 1}"
            key = f"{reason} ({where})"
            others[key] = others.get(key, 0) + 1
    if not (slow or excluded or others or linux_only):
        return
    write = terminalreporter.write_line
    terminalreporter.section("skipped", sep="-")
    if slow:
        write(f"{slow} slow tests not run: set JOBPOOL_RUN_SLOW=1 to run them")
    if excluded:
        write(
            f"{excluded} cases of CPython's own test suites excluded on purpose, each with its "
            "reason: pytest -rs tests/test_stdlib_suite.py tests/test_stdlib_pool_suite.py"
        )
    for which, count in sorted(linux_only.items()):
        write(f"{count} tests about a Linux-only mechanism skipped: {which} is missing or off")
    for key, count in sorted(others.items()):
        write(f"{count} skipped: {key}")


# --- one Dask cluster for the whole run --------------------------------------------------------

DASK_CLUSTER_SCRIPT = textwrap.dedent(
    """
    import sys

    import dask
    from distributed import LocalCluster

    if __name__ == "__main__":
        # Fail a job at the first worker death, as the pool's own cluster does.
        dask.config.set({"distributed.scheduler.allowed-failures": 0})
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False},
        )
        print(cluster.scheduler_address, flush=True)
        sys.stdin.read()  # until the test run closes our stdin
        cluster.close()
    """
)


@pytest.fixture(scope="session")
def dask_address() -> Iterator[str]:
    """A LocalCluster of 2 worker processes x 2 threads, in a subprocess, for the whole run.

    Starting a cluster takes seconds, and one kept in this process would show its worker
    processes to the leftover-process guard of every test.
    """
    env = dict(os.environ)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join([tests_dir, *filter(None, [env.get("PYTHONPATH")])])
    process = subprocess.Popen(
        [sys.executable, "-c", DASK_CLUSTER_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    readable, _, _ = select.select([process.stdout], [], [], WAIT)
    address = process.stdout.readline().strip() if readable else ""
    try:
        if not address.startswith("tcp://"):
            pytest.fail(f"the test cluster did not start (it printed {address!r})")
        yield address
    finally:
        process.stdin.close()
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
