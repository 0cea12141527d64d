"""Shared fixtures: a pool factory over every local backend, and a guard against leftovers.

``make_pool`` builds pools on the thread backend and on the process backend under each start
method; every pool it made is shut down after the test, and the guard then checks that no child
process of this test run is left behind.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from jobpool import Pool

START_METHODS = [
    m for m in ("forkserver", "spawn", "fork") if m in multiprocessing.get_all_start_methods()
]
LOCAL_BACKENDS = ["thread", *(f"process-{m}" for m in START_METHODS)]
# Fast subset for the bulk of the behaviour tests: one start method that re-imports (spawn-like)
# and fork. The full matrix runs where the start method matters.
BACKENDS = ["thread", "process-forkserver", "process-fork"]

WAIT = 60  # seconds; a generous ceiling that fails loudly instead of hanging


def pool_kwargs(backend: str) -> dict[str, Any]:
    if backend.startswith("process-"):
        return {"backend": "process", "start_method": backend.split("-", 1)[1]}
    return {"backend": backend}


@pytest.fixture
def make_pool() -> Iterator[Callable[..., Pool]]:
    pools: list[Pool] = []

    def make(backend: str = "thread", workers: int = 2, **kwargs: Any) -> Pool:
        pool = Pool(workers, **pool_kwargs(backend), **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Every test that starts processes must leave none behind (the fork server excepted)."""
    yield
    assert_no_leftover_processes()


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


EXCLUDED = "excluded on purpose: "


def skipped_case(reason: str) -> Any:
    """A unittest case that is skipped with ``reason`` (for the stdlib suites' exclusions)."""
    import unittest

    @unittest.skip(EXCLUDED + reason)
    def test(self: Any) -> None:  # pragma: no cover - never runs
        pass

    return test


# --- an exception in any thread fails the test it happened in -----------------------------------

_thread_errors: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    threading.excepthook = _record_thread_exception


def _record_thread_exception(args: Any) -> None:
    name = getattr(args.thread, "name", "?")
    _thread_errors.append(f"{name}: {args.exc_type.__name__}: {args.exc_value}")
    sys.__stderr__.write(f"exception in thread {args.thread}: {args.exc_value!r}\n")


@pytest.fixture(autouse=True)
def no_thread_exceptions() -> Iterator[None]:
    """A helper thread (a submitter, a killer, a pool's own thread) that raised fails the test."""
    _thread_errors.clear()
    yield
    errors, _thread_errors[:] = list(_thread_errors), []
    if errors:
        pytest.fail("exceptions in threads during the test:\n" + "\n".join(errors))


# --- slow tests: marked, and run only when asked (CI asks) ---------------------------------------

RUN_SLOW = os.environ.get("JOBPOOL_RUN_SLOW", "") not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.slow`` tests run with JOBPOOL_RUN_SLOW=1 (as ``.ci/run`` sets) or when
    selected with ``-m slow``; a plain ``python -m pytest -q`` leaves them out."""
    if RUN_SLOW or "slow" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason=SLOW_REASON)
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


SLOW_REASON = "slow: set JOBPOOL_RUN_SLOW=1 (CI does) or select -m slow"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Skips in a few lines, none left out: the slow tests and the stdlib suites' deliberate
    exclusions as one count each, every other skip with its reason and how many share it.

    pyproject's ``addopts`` lists only failures and errors one per line (``-rfE``); ``-rs``
    still lists every skip."""
    slow = excluded = 0
    others: dict[str, int] = {}
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
        else:
            where = f"{Path(str(path)).name}:{line + 1}"
            key = f"{reason} ({where})"
            others[key] = others.get(key, 0) + 1
    if not (slow or excluded or others):
        return
    write = terminalreporter.write_line
    terminalreporter.section("skipped", sep="-")
    if slow:
        write(f"{slow} slow tests not run: set JOBPOOL_RUN_SLOW=1 to run them (CI does)")
    if excluded:
        write(
            f"{excluded} cases of CPython's own test suites excluded on purpose, each with its "
            "reason: pytest -rs tests/test_stdlib_suite.py tests/test_stdlib_pool_suite.py"
        )
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
    pytest.importorskip("distributed")
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
