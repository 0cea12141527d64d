"""Both stdlib dialects by one import: put ``jobpool.`` in front of the stdlib's module name.

Every import line below is a stdlib one; with ``jobpool.`` in front it must import, give
jobpool's pools and executors where jobpool has them and the stdlib's own objects for every
other name. The executors take the stdlib's constructor arguments and behave as the stdlib's do
(the stdlib's own test classes run against them in ``test_stdlib_suite.py`` on Python 3.13+).
"""

from __future__ import annotations

import concurrent.futures
import importlib
import inspect
import multiprocessing
import multiprocessing.dummy
import multiprocessing.pool
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobpool
import jobpool.multiprocessing
from conftest import START_METHODS, WAIT
from jobpool.concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from jobs import segfault

# (stdlib module, names code imports from it)
IMPORT_LINES = [
    ("multiprocessing", ["Pool", "ThreadPool", "cpu_count", "Queue", "Manager", "TimeoutError"]),
    (
        "multiprocessing.pool",
        [
            "Pool",
            "ThreadPool",
            "AsyncResult",
            "ApplyResult",
            "MapResult",
            "IMapIterator",
            "IMapUnorderedIterator",
            "RemoteTraceback",
            "MaybeEncodingError",
            "TimeoutError",
            "RUN",
        ],
    ),
    ("multiprocessing.dummy", list(multiprocessing.dummy.__all__)),
    ("multiprocessing.dummy.connection", ["Pipe", "Listener", "Client", "Connection"]),
    ("concurrent.futures", list(concurrent.futures.__all__)),
    ("concurrent.futures.process", ["ProcessPoolExecutor", "BrokenProcessPool"]),
    ("concurrent.futures.thread", ["ThreadPoolExecutor", "BrokenThreadPool"]),
]

# The names whose jobpool object differs from the stdlib's, per module.
JOBPOOLS_OWN = {
    "multiprocessing": {"Pool", "ThreadPool"},
    "multiprocessing.pool": {
        "Pool",
        "ThreadPool",
        "AsyncResult",
        "ApplyResult",
        "MapResult",
        "IMapIterator",
        "IMapUnorderedIterator",
        "RemoteTraceback",
    },
    "multiprocessing.dummy": {"Pool"},
    "concurrent.futures": {"ProcessPoolExecutor", "ThreadPoolExecutor"},
    "concurrent.futures.process": {"ProcessPoolExecutor"},
    "concurrent.futures.thread": {"ThreadPoolExecutor"},
}


@pytest.mark.parametrize(("module", "names"), IMPORT_LINES, ids=[m for m, _ in IMPORT_LINES])
def test_stdlib_import_lines_work_with_the_jobpool_prefix(module: str, names: list[str]) -> None:
    stdlib = importlib.import_module(module)
    namespace: dict[str, Any] = {}
    exec(f"from jobpool.{module} import {', '.join(names)}", namespace)
    own = JOBPOOLS_OWN.get(module, set())
    for name in names:
        value = namespace[name]
        if name in own:
            assert value is not getattr(stdlib, name, None), name
            assert getattr(value, "__module__", "").startswith("jobpool"), name
        else:
            assert value is getattr(stdlib, name), name


def test_submodules_are_attributes_as_in_the_stdlib() -> None:
    namespace: dict[str, Any] = {}
    exec("import jobpool.multiprocessing as multiprocessing", namespace)
    exec("import jobpool.concurrent.futures", namespace)
    mp = namespace["multiprocessing"]
    assert mp.pool.ThreadPool is jobpool.multiprocessing.ThreadPool
    assert mp.pool.Pool is mp.Pool
    assert mp.dummy.Pool(1).__class__ is mp.ThreadPool
    futures = namespace["jobpool"].concurrent.futures
    assert futures.process.ProcessPoolExecutor is ProcessPoolExecutor
    assert futures.thread.ThreadPoolExecutor is ThreadPoolExecutor


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (ProcessPoolExecutor, concurrent.futures.ProcessPoolExecutor),
        (ThreadPoolExecutor, concurrent.futures.ThreadPoolExecutor),
        (jobpool.multiprocessing.pool.Pool, multiprocessing.pool.Pool),
        (jobpool.multiprocessing.pool.ThreadPool, multiprocessing.pool.ThreadPool),
    ],
)
def test_constructors_take_the_stdlib_arguments(ours: type, theirs: type) -> None:
    """Every parameter of the stdlib's constructor, in its order, kind and default."""
    stdlib = list(inspect.signature(theirs.__init__).parameters.values())
    jobpools = list(inspect.signature(ours.__init__).parameters.values())
    for theirs_param, ours_param in zip(stdlib, jobpools):
        assert ours_param.name == theirs_param.name
        assert ours_param.kind == theirs_param.kind, ours_param
        if theirs_param.name != "context":  # None here too, meaning jobpool's default
            assert ours_param.default == theirs_param.default, ours_param
    assert len(jobpools) >= len(stdlib)


def test_executor_argument_errors_are_the_stdlibs() -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        ThreadPoolExecutor(0)
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        ProcessPoolExecutor(-1)
    with pytest.raises(ValueError, match="max_tasks_per_child must be >= 1"):
        ProcessPoolExecutor(1, max_tasks_per_child=0)
    with pytest.raises(TypeError, match="max_tasks_per_child must be an integer"):
        ProcessPoolExecutor(1, max_tasks_per_child="3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="initializer must be a callable"):
        ThreadPoolExecutor(1, initializer=3)  # type: ignore[arg-type]


def test_thread_names_follow_the_prefix() -> None:
    gate = threading.Barrier(3, timeout=WAIT)

    def name_when_all_run(_: int) -> str:
        gate.wait()  # all three run at once: three threads
        return threading.current_thread().name

    with ThreadPoolExecutor(3, thread_name_prefix="Special") as executor:
        names = sorted(executor.map(name_when_all_run, range(3), timeout=WAIT))
    assert names == ["Special_0", "Special_1", "Special_2"]
    with ThreadPoolExecutor(1) as executor:
        name = executor.submit(lambda: threading.current_thread().name).result(WAIT)
    assert name.startswith("ThreadPoolExecutor-") and name.endswith("_0")


def touch(path: str) -> str:
    Path(path).touch()
    return path


@pytest.mark.parametrize("method", ["thread", *START_METHODS])
def test_map_submits_every_item_without_iteration(method: str, tmp_path: Path) -> None:
    """As the stdlib's: the jobs run even though nobody takes their results."""
    paths = [str(tmp_path / f"{i}") for i in range(10)]
    executor = (
        ThreadPoolExecutor(2) if method == "thread" else ProcessPoolExecutor(2, mp_context=method)
    )
    executor.map(touch, paths)
    executor.shutdown(wait=True)
    assert sorted(os.listdir(tmp_path)) == sorted(str(i) for i in range(10))


def test_map_with_buffersize_reads_lazily() -> None:
    taken: list[int] = []

    def endless() -> Iterator[int]:
        n = 0
        while True:
            taken.append(n)
            yield n
            n += 1

    with ThreadPoolExecutor(2) as executor:
        results = executor.map(abs, endless(), buffersize=4)
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        assert len(taken) < 50  # read a window ahead, not to the end (there is none)
        results.close()  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="buffersize must be None or > 0"):
        ThreadPoolExecutor(1).map(abs, [1], buffersize=0)


def test_map_raises_an_items_error_in_its_turn_and_frees_the_rest() -> None:
    with ThreadPoolExecutor(2) as executor:
        results = executor.map(lambda x: 1 // x, [1, 1, 0, 1], chunksize=2)
        assert next(results) == 1 and next(results) == 1
        with pytest.raises(ZeroDivisionError):
            next(results)


@pytest.mark.parametrize("method", START_METHODS)
def test_process_executor_does_better_than_the_stdlibs(method: str) -> None:
    """A lambda runs; a crashed worker fails its own job and the executor goes on;
    max_tasks_per_child replaces workers under any start method."""
    with ProcessPoolExecutor(2, mp_context=method, max_tasks_per_child=2) as executor:
        assert list(executor.map(lambda x: x * 2, range(6), timeout=WAIT)) == [0, 2, 4, 6, 8, 10]
        with pytest.raises(jobpool.WorkerCrashedError):
            executor.submit(segfault).result(WAIT)
        pids = {executor.submit(os.getpid).result(WAIT) for _ in range(6)}
        assert len(pids) >= 3  # no worker ran more than two jobs
        assert isinstance(executor, jobpool.Pool)
        assert repr(executor).startswith("<jobpool.concurrent.futures.ProcessPoolExecutor")


@pytest.mark.parametrize("method", START_METHODS)
def test_get_context_pool_is_jobpools(method: str) -> None:
    """``multiprocessing.get_context(m).Pool(...)``, a common spelling, gets jobpool's pool."""
    from multiprocessing.context import BaseContext

    import jobpool.multiprocessing as mp

    context = mp.get_context(method)
    assert isinstance(context, BaseContext) and context.get_start_method() == method
    assert type(context).__mro__[1] is type(multiprocessing.get_context(method))
    with context.Pool(2) as pool:
        assert isinstance(pool, mp.Pool)
        assert pool.map(abs, [-1, -2]) == [1, 2]
        assert pool.apply(lambda: 7) == 7  # jobpool's: a lambda travels
    pool.join()
