"""A worker that dies mid-job fails only the job it held; the pool replaces it and goes on."""

from __future__ import annotations

import signal
from typing import Callable

import pytest

import jobs
from conftest import START_METHODS, WAIT, MakePool
from jobpool import WorkerCrashedError


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize(
    ("injector", "exitcode", "signal_name"),
    [
        (jobs.exit_now, 3, None),
        (jobs.segfault, -signal.SIGSEGV, "SIGSEGV"),
        (jobs.kill_self, -signal.SIGKILL, "SIGKILL"),
    ],
    ids=["os._exit", "segfault", "SIGKILL"],
)
def test_crash_fails_only_its_job(
    make_pool: MakePool,
    start_method: str,
    injector: Callable[[], None],
    exitcode: int,
    signal_name: str | None,
) -> None:
    pool = make_pool(f"process-{start_method}", workers=2)
    before = [pool.submit(jobs.square, i) for i in range(10)]
    crashed = pool.submit(injector)
    after = [pool.submit(jobs.square, i) for i in range(10, 20)]
    with pytest.raises(WorkerCrashedError) as info:
        crashed.result(WAIT)
    error = info.value
    assert error.exitcode == exitcode
    assert error.signal == signal_name
    assert error.pid is not None and str(error.pid) in str(error)
    assert [f.result(WAIT) for f in before + after] == [i * i for i in range(20)]
    assert pool.submit(jobs.square, 7).result(WAIT) == 49
    stats = pool.stats()
    assert stats.worker_restarts == 1
    assert stats.workers == 2
    assert stats.failed == 1 and stats.done == 21


def test_crash_inside_map_fails_only_that_chunk(make_pool: MakePool) -> None:
    pool = make_pool("process-fork", workers=2)

    def maybe_die(x: int) -> int:
        if x == 13:
            jobs.exit_now(5)
        return x

    results = pool.map(maybe_die, range(20), chunksize=1, ordered=False, timeout=WAIT)
    seen = []
    with pytest.raises(WorkerCrashedError):
        for value in results:
            seen.append(value)
    # What came before the crashed chunk's turn is right and unrepeated; the map ends there.
    assert len(seen) == len(set(seen)) and set(seen) <= set(range(20)) - {13}
    assert pool.submit(jobs.square, 3).result(WAIT) == 9
    # With on_error, the crash costs its own item only: every other item comes through.
    errors: list[BaseException] = []
    values = list(pool.map(maybe_die, range(20), chunksize=1, on_error=errors.append, timeout=WAIT))
    assert values == [x for x in range(20) if x != 13]
    assert len(errors) == 1 and isinstance(errors[0], WorkerCrashedError)
