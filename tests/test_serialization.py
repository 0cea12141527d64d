"""pickle first, cloudpickle when it refuses, SerializationError naming the part otherwise."""

from __future__ import annotations

import copyreg
import pickle
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobs
from conftest import PROCESS_BACKENDS, WAIT, MakePool
from jobpool import RemoteError, RemoteTraceback, ResultLoadError, SerializationError
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


FIRST_SUBMITS = """
import sys
import threading

from jobpool import Pool

assert "cloudpickle" not in sys.modules, "imported before the first submit: nothing to race"
errors = []
with Pool(1, backend="process", start_method=sys.argv[1]) as pool:
    barrier = threading.Barrier(8)

    def first_submit():
        try:
            barrier.wait(60)
            assert pool.submit(lambda: 1).result(60) == 1
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=first_submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
print(errors)
"""


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_concurrent_first_submits_wait_for_the_import(method: str) -> None:
    """Eight threads make a process pool's first submits at once, each pickling a lambda: the
    first imports cloudpickle, the others must wait for that import, not take the half-made
    module from sys.modules. Before the fix 7 runs in 10 failed; each run is a fresh
    interpreter, since only the first import can race."""
    for _ in range(8):
        out = subprocess.run(
            [sys.executable, "-c", FIRST_SUBMITS, method],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]"


def test_a_half_imported_numpy_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A numpy module that another thread is still importing (in sys.modules, no ndarray yet)
    is not taken for a finished one when deciding what goes through shared memory."""
    from jobpool._process import _out_of_band

    monkeypatch.setitem(sys.modules, "numpy", types.ModuleType("numpy"))
    monkeypatch.setattr(_out_of_band, "_NDARRAY", None)
    payload = ([1, 2], {"x": memoryview(b"abc")})
    assert not _out_of_band.looks_large([1, 2.0, "x"], 1 << 20)
    stream, views = _out_of_band.pickle_payload(payload, "job", 1 << 20, likely_large=True)
    assert _out_of_band.loads(stream, None, [], False)[1]["x"].tobytes() == b"abc"
    assert views == []


def test_a_result_that_cannot_be_loaded_here_says_so(
    make_pool: MakePool, process_backend: str
) -> None:
    """A result whose class's module exists only in the worker, or whose rebuilding raises,
    fails with ResultLoadError naming the part, the class or function, and the cause: not as
    a bare error that reads as if the job had raised it."""
    pool = make_pool(process_backend)
    with pytest.raises(ResultLoadError) as info:
        pool.submit(jobs.worker_only_object, 1).result(WAIT)
    error = info.value
    assert isinstance(error, SerializationError)
    assert error.path == "the job's result"
    assert error.type_name == f"{jobs.WORKER_ONLY_MODULE}.Thing"
    assert str(error).startswith(
        f"cannot load the job's result in the caller: importing {jobs.WORKER_ONLY_MODULE}.Thing "
        f"raised ModuleNotFoundError: No module named '{jobs.WORKER_ONLY_MODULE}'"
    )
    assert type(error.__cause__) is ModuleNotFoundError
    with pytest.raises(ResultLoadError) as info:
        pool.submit(jobs.nested_worker_only, 1).result(WAIT)
    assert info.value.path == "the job's result[1]['x']"
    with pytest.raises(ResultLoadError) as info:
        pool.submit(jobs.RebuildFails, 7).result(WAIT)
    assert info.value.type_name == "jobs._refuse_to_rebuild"
    assert "calling jobs._refuse_to_rebuild raised RuntimeError: refusing to rebuild 7" in str(
        info.value
    )
    assert type(info.value.__cause__) is RuntimeError
    # A job that raises such an error itself still raises it as itself.
    with pytest.raises(ModuleNotFoundError) as raised:
        pool.submit(jobs.raise_module_not_found).result(WAIT)
    assert isinstance(raised.value.__cause__, RemoteTraceback)
    assert pool.submit(jobs.square, 6).result(WAIT) == 36


def test_running_out_of_memory_while_pickling_a_result_says_so(
    make_pool: MakePool, process_backend: str
) -> None:
    """A MemoryError while pickling is reported as what it is, not blamed on a part."""
    pool = make_pool(process_backend, workers=1, max_jobs_per_worker=1)
    future = pool.submit(jobs.big_text_under_memory_limit, 50_000_000, 25_000_000)
    error = future.exception(WAIT)
    assert type(error) is SerializationError
    assert str(error).startswith(
        "cannot serialize the job's result: the process ran out of memory while pickling it "
        "(MemoryError"
    )
    assert "holds" not in str(error) and "Pass something picklable" not in str(error)
    assert pool.submit(jobs.square, 3).result(WAIT) == 9


def test_an_error_raised_by_an_objects_own_pickling_says_so() -> None:
    """An object whose __reduce__ raises is named with what it raised; pickle's own refusals
    keep saying what the part holds."""
    with pytest.raises(SerializationError) as info:
        dumps({"a": [1, jobs.ReduceRaises()]}, "the job's result")
    assert info.value.path == "the job's result['a'][1]"
    assert str(info.value).startswith(
        "cannot serialize the job's result['a'][1]: pickling a 'jobs.ReduceRaises' object "
        "raised ValueError: not in this state"
    )
    with pytest.raises(SerializationError, match=r"it holds a '_thread.lock' object \(TypeError"):
        dumps([threading.Lock()], "the job's result")


PEAK = """
import resource
import sys

sys.path.insert(0, {tests!r})
import jobs
from jobpool import Pool

size = 100_000_000
with Pool(1, backend="process", start_method=sys.argv[1]) as pool:
    pool.submit(abs, 1).result(60)
    if sys.argv[2] == "exception":
        error = pool.submit(jobs.raise_long_message, size).exception(120)
        assert type(error) is ValueError and len(str(error)) == size, repr(error)[:200]
        assert len(error.__cause__.tb) < 100_000  # the message is not in the traceback again
    else:
        assert len(pool.submit(jobs.long_text, size).result(120)) == size
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_a_long_exception_message_costs_what_a_long_result_costs(method: str) -> None:
    """A 100 MB exception message travels once, as a 100 MB result does: the caller's peak
    memory is about the same (it was 919 MB against 319 MB when the message went three times)."""
    peaks = {}
    script = PEAK.format(tests=str(Path(__file__).parent))
    for kind in ("result", "exception"):
        out = subprocess.run(
            [sys.executable, "-c", script, method, kind],
            capture_output=True,
            text=True,
            timeout=WAIT * 2,
        )
        assert out.returncode == 0, out.stderr
        peaks[kind] = int(out.stdout.split()[-1])
    assert peaks["exception"] < peaks["result"] + 50_000_000, peaks


def _rebuild_without_init(cls: type, args: tuple[Any, ...], attrs: dict[str, Any]) -> Any:
    exc = cls.__new__(cls, *args)
    exc.__dict__.update(attrs)
    return exc


def _blanket_exception_reducer(exc: BaseException) -> Any:
    """What tblib's ``pickling_support.install()`` (run by ``import distributed``) registers for
    every exception class: rebuilt with ``__new__``, without ``__init__``."""
    return _rebuild_without_init, (type(exc), exc.args, dict(exc.__dict__))


@pytest.fixture
def blanket_exception_reducers() -> Iterator[None]:
    """Exception reducers registered in ``copyreg`` for every built-in exception type, as
    importing ``distributed`` does; a fork worker inherits them."""
    saved = dict(copyreg.dispatch_table)
    for kind in (SystemExit, StopIteration, UnicodeDecodeError, ValueError):
        copyreg.pickle(kind, _blanket_exception_reducer)
    try:
        yield
    finally:
        copyreg.dispatch_table.clear()
        copyreg.dispatch_table.update(saved)


def test_built_in_exceptions_keep_their_fields_under_a_blanket_reducer(
    blanket_exception_reducers: None, make_pool: MakePool, process_backend: str
) -> None:
    # The registration loses SystemExit's code in a pickle round trip of its own ...
    assert pickle.loads(pickle.dumps(SystemExit(3))).code is None
    # ... but not on its way back from a worker (forked ones inherit the registration).
    pool = make_pool(process_backend)
    exc = pool.submit(jobs.raise_builtin, "SystemExit", 3).exception(WAIT)
    assert isinstance(exc, SystemExit) and exc.code == 3
    exc = pool.submit(jobs.raise_builtin, "StopIteration", "last").exception(WAIT)
    assert isinstance(exc, StopIteration) and exc.value == "last"
    decode = ("utf-8", b"\xff", 0, 1, "invalid start byte")
    exc = pool.submit(jobs.raise_builtin, "UnicodeDecodeError", *decode).exception(WAIT)
    assert isinstance(exc, UnicodeDecodeError) and (exc.start, exc.reason) == (0, decode[4])
    # A lambda in the arguments takes the cloudpickle path, with the same care.
    exc = pool.submit(jobs.raise_builtin, "SystemExit", lambda: 1).exception(WAIT)
    assert isinstance(exc, SystemExit) and callable(exc.code)
