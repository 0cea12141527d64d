"""Shared fixtures: a pool factory over every local backend, and a guard against leftovers.

``make_pool`` builds pools on the thread backend and on the process backend under each start
method; every pool it made is shut down after the test, and the guard then checks that no child
process of this test run is left behind.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Iterator
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


def pytest_configure(config: pytest.Config) -> None:
    threading.excepthook = _fail_on_thread_exception


def _fail_on_thread_exception(args: Any) -> None:
    sys.__stderr__.write(f"exception in thread {args.thread}: {args.exc_value!r}\n")
