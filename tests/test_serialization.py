"""pickle first, cloudpickle when it refuses, SerializationError naming the part otherwise."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jobs
from conftest import PROCESS_BACKENDS, WAIT, MakePool
from jobpool import RemoteError, SerializationError
from jobpool._serialization import dumps


@pytest.fixture(params=PROCESS_BACKENDS)
def process_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_lambda_closure_and_local_class_bound_method(
    make_pool: MakePool, process_backend: str
) -> None:
    class Local:
        def __init__(self, base: int) -> None:
            self.base = base

        def add(self, x: int) -> int:
            return self.base + x

    factor = 3
    pool = make_pool(process_backend)
    assert pool.submit(lambda x: x * factor, 4).result(WAIT) == 12
    assert pool.submit(Local(10).add, 5).result(WAIT) == 15
    assert pool.submit(jobs.identity, Local(7)).result(WAIT).base == 7
    assert list(pool.map(Local(1).add, range(3), timeout=WAIT)) == [1, 2, 3]


def test_bound_method_of_module_class(make_pool: MakePool, process_backend: str) -> None:
    pool = make_pool(process_backend)
    assert pool.submit(jobs.Counter(100).add, 1).result(WAIT) == 101


def test_unpicklable_argument_is_named_at_submit(make_pool: MakePool, process_backend: str) -> None:
    pool = make_pool(process_backend)
    before = pool.submit(jobs.square, 3)
    with pytest.raises(SerializationError) as info:
        pool.submit(jobs.identity, jobs.Unpicklable())
    error = info.value
    assert isinstance(error, pickle.PicklingError)
    assert error.path == "args[0].conn"
    assert "args[0].conn" in str(error) and "lock" in str(error)
    with pytest.raises(SerializationError, match=r"kwargs\['x'\].conn"):
        pool.submit(jobs.echo_kwargs, x=jobs.Unpicklable())
    assert pool.stats().submitted == 1
    assert before.result(WAIT) == 9
    assert pool.submit(jobs.square, 4).result(WAIT) == 16


def test_unpicklable_function_is_named(make_pool: MakePool) -> None:
    pool = make_pool("process-fork")
    holder = jobs.Unpicklable()
    with pytest.raises(SerializationError, match="fn"):
        pool.submit(lambda: holder.conn)


def test_unpicklable_result_fails_only_that_job(make_pool: MakePool, process_backend: str) -> None:
    pool = make_pool(process_backend)
    bad = pool.submit(jobs.return_lock)
    good = pool.submit(jobs.square, 5)
    with pytest.raises(SerializationError, match="result"):
        bad.result(WAIT)
    assert good.result(WAIT) == 25


def test_unpicklable_exception_is_still_reported(make_pool: MakePool, process_backend: str) -> None:
    pool = make_pool(process_backend)
    with pytest.raises(RemoteError, match="UnpicklableError: holds a lock") as info:
        pool.submit(jobs.raise_unpicklable_error).result(WAIT)
    assert "raise_unpicklable_error" in str(info.value.__cause__)


def test_pickle_stays_the_fast_path() -> None:
    data = dumps((jobs.square, (1,), {}))
    assert b"cloudpickle" not in data
    lam = dumps(lambda x: x)
    assert b"cloudpickle" in lam


def test_main_module_functions_work_under_spawn(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            from jobpool import Pool

            class Point:
                def __init__(self, x):
                    self.x = x

            def double(p):
                return Point(p.x * 2)

            if __name__ == "__main__":
                for method in ("spawn", "forkserver"):
                    with Pool(2, backend="process", start_method=method) as pool:
                        print(pool.submit(double, Point(21)).result(60).x)
                        print(list(pool.map(lambda v: v + 1, [1, 2])))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["42", "[2,", "3]", "42", "[2,", "3]"]


def test_thread_backend_needs_no_pickling(make_pool: MakePool) -> None:
    pool = make_pool("thread")
    lock_holder = jobs.Unpicklable()
    assert pool.submit(jobs.identity, lock_holder).result(WAIT) is lock_holder
