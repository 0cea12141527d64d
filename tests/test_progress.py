"""Progress bars and result callbacks: map/starmap/as_completed, on every local backend."""

from __future__ import annotations

import io
import os
import sys
import threading
from concurrent.futures import Future
from typing import Any, Callable

import pytest

import jobs
from conftest import WAIT
from jobpool import Pool


@pytest.fixture
def tqdm() -> Any:
    """tqdm itself, for the tests of real bars (callbacks and user bars need no tqdm)."""
    import tqdm

    return tqdm


class RecordingBar:
    """Anything with update(n) is a bar: records what it was told and where it ran."""

    def __init__(self) -> None:
        self.updates: list[int] = []
        self.pids: set[int] = set()

    def update(self, n: int = 1) -> None:
        self.updates.append(n)
        self.pids.add(os.getpid())


def test_map_shows_a_tqdm_bar(tqdm: Any, make_pool: Callable[..., Pool], backend: str) -> None:
    pool = make_pool(backend)
    out = io.StringIO()
    results = list(
        pool.map(jobs.square, range(25), progress={"file": out, "mininterval": 0}, timeout=WAIT)
    )
    assert results == [x * x for x in range(25)]
    text = out.getvalue()
    assert "25/25" in text and "100%" in text
    assert "square" in text  # the bar is named after the function


def test_starmap_bar_counts_items(make_pool: Callable[..., Pool], backend: str) -> None:
    pool = make_pool(backend)
    bar = RecordingBar()
    pairs = [(i, i) for i in range(12)]
    assert list(pool.starmap(jobs.add, pairs, progress=bar, timeout=WAIT)) == [
        2 * i for i in range(12)
    ]
    assert sum(bar.updates) == 12
    assert bar.pids == {os.getpid()}


def test_progress_true_uses_tqdm_with_the_total(
    tqdm: Any, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Any] = []
    real = tqdm.auto.tqdm

    def spy(*args: Any, **kwargs: Any) -> Any:
        kwargs["file"] = io.StringIO()
        bar = real(*args, **kwargs)
        made.append(bar)
        return bar

    monkeypatch.setattr(tqdm.auto, "tqdm", spy)
    pool = make_pool("thread")
    assert list(pool.map(jobs.square, [1, 2, 3], progress=True, timeout=WAIT)) == [1, 4, 9]
    (bar,) = made
    assert bar.total == 3 and bar.n == 3
    assert bar.disable  # the pool made this bar, so the pool closed it (tqdm disables on close)


def test_unsized_input_gives_a_bar_without_total(tqdm: Any, make_pool: Callable[..., Pool]) -> None:
    out = io.StringIO()
    pool = make_pool("thread")
    items = (x for x in range(7))
    assert list(
        pool.map(jobs.square, items, progress={"file": out, "mininterval": 0}, timeout=WAIT)
    ) == [x * x for x in range(7)]
    assert "7it" in out.getvalue()


def test_missing_tqdm_raises_at_call_time(
    make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    pool = make_pool("thread")
    with pytest.raises(ImportError, match=r'pip install "jobpool\[progress\]"'):
        pool.map(jobs.square, [1, 2], progress=True)  # not iterated: the call itself raises
    with pytest.raises(ImportError, match="jobpool"):
        pool.starmap(jobs.add, [(1, 2)], progress={"desc": "x"})
    with pytest.raises(ImportError, match="jobpool"):
        pool.as_completed([pool.submit(jobs.square, 2)], progress=True)
    assert pool.stats().submitted == 1  # only the submit above: map queued nothing
    # Callbacks and user-supplied bars need no tqdm.
    seen: list[int] = []
    assert list(pool.map(jobs.square, [1, 2], on_result=seen.append, timeout=WAIT)) == [1, 4]
    assert seen == [1, 4]


def test_bad_progress_and_callbacks_are_refused(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool("thread")
    with pytest.raises(TypeError, match="progress"):
        pool.map(jobs.square, [1], progress="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_result"):
        pool.map(jobs.square, [1], on_result=3)  # type: ignore[arg-type]


def test_callbacks_run_once_per_item_in_the_iterating_thread(
    make_pool: Callable[..., Pool], backend: str
) -> None:
    pool = make_pool(backend)
    calls: list[tuple[str, Any, int, int]] = []

    def record(kind: str) -> Callable[[Any], None]:
        return lambda value: calls.append((kind, value, os.getpid(), threading.get_ident()))

    results = list(
        pool.map(
            jobs.fail_on_odd,
            range(10),
            on_result=record("ok"),
            on_error=record("err"),
            timeout=WAIT,
        )
    )
    assert results == [0, 2, 4, 6, 8]  # with on_error, failed items are left out
    assert sorted(v for k, v, _, _ in calls if k == "ok") == [0, 2, 4, 6, 8]
    errors = [v for k, v, _, _ in calls if k == "err"]
    assert sorted(str(e) for e in errors) == [f"odd: {i}" for i in (1, 3, 5, 7, 9)]
    assert all(isinstance(e, ValueError) for e in errors)
    assert len(calls) == 10
    assert {(pid, tid) for _, _, pid, tid in calls} == {(os.getpid(), threading.get_ident())}


def test_on_result_without_on_error_still_raises(
    make_pool: Callable[..., Pool], backend: str
) -> None:
    pool = make_pool(backend)
    seen: list[int] = []
    bar = RecordingBar()
    results = pool.map(
        jobs.fail_on_odd,
        [0, 2, 3, 4],
        chunksize=1,
        on_result=seen.append,
        progress=bar,
        timeout=WAIT,
    )
    assert next(results) == 0
    assert next(results) == 2
    with pytest.raises(ValueError, match="odd: 3"):
        next(results)
    assert seen == [0, 2]
    assert sum(bar.updates) == 3  # the failed item counts as done on the bar


def test_unordered_map_callbacks(make_pool: Callable[..., Pool], backend: str) -> None:
    pool = make_pool(backend)
    seen: list[int] = []
    results = list(
        pool.map(jobs.square, range(30), ordered=False, on_result=seen.append, timeout=WAIT)
    )
    assert sorted(results) == [x * x for x in range(30)]
    assert seen == results  # called in the order the caller receives them


def test_whole_chunk_failure_reaches_on_error(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool("process-fork", workers=1)
    errors: list[BaseException] = []
    results = list(
        pool.map(jobs.exit_now, [3, 3], chunksize=2, on_error=errors.append, timeout=WAIT)
    )
    assert results == []
    assert len(errors) == 2  # one per item of the chunk whose worker died
    assert all(type(e).__name__ == "WorkerCrashedError" for e in errors)


def test_breaking_out_closes_the_bar_and_cancels(tqdm: Any, make_pool: Callable[..., Pool]) -> None:
    pool = make_pool("thread", workers=1)
    out = io.StringIO()
    with jobs.StartGate() as gate:
        items = [(gate.address, f"t{i}", i) for i in range(20)]
        results = pool.starmap(
            jobs.gate_job,
            items,
            chunksize=1,
            buffersize=4,
            progress={"file": out, "mininterval": 0},
            timeout=WAIT,
        )
        gate.wait_for("t0")
        gate.release("t0")
        assert next(results) == 0
        gate.wait_for("t1")  # t1 runs on the only worker; t2..t4 are queued behind it
        results.close()  # type: ignore[attr-defined]
        assert out.getvalue().endswith("\n")  # tqdm writes a newline when it closes
        gate.release("t1")
        pool.shutdown(wait=True)
    stats = pool.stats()
    assert (stats.submitted, stats.done, stats.cancelled) == (5, 2, 3)


def test_as_completed_with_bar_and_callbacks(
    tqdm: Any, make_pool: Callable[..., Pool], backend: str
) -> None:
    pool = make_pool(backend)
    futures = [pool.submit(jobs.fail_on_odd, i) for i in range(6)]
    cancelled: Future[int] = Future()
    cancelled.cancel()
    cancelled.set_running_or_notify_cancel()  # as an executor does when it dequeues it
    out = io.StringIO()
    seen: list[Any] = []
    where: set[int] = set()

    def on_result(value: int) -> None:
        seen.append(value)
        where.add(os.getpid())

    def on_error(exc: BaseException) -> None:
        seen.append(type(exc).__name__)
        where.add(os.getpid())

    done = list(
        pool.as_completed(
            [*futures, cancelled],
            timeout=WAIT,
            progress={"file": out, "mininterval": 0},
            on_result=on_result,
            on_error=on_error,
        )
    )
    assert set(done) == {*futures, cancelled}
    assert sorted(map(str, seen)) == sorted(
        ["0", "2", "4", "ValueError", "ValueError", "ValueError", "CancelledError"]
    )
    assert where == {os.getpid()}
    assert "7/7" in out.getvalue()


def test_as_completed_without_extras_is_the_stdlib(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool("thread")
    futures = [pool.submit(jobs.square, i) for i in range(4)]
    assert sorted(f.result() for f in pool.as_completed(futures, timeout=WAIT)) == [0, 1, 4, 9]


def test_options_map_takes_callbacks(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool("thread")
    seen: list[int] = []
    assert list(
        pool.options(timeout=WAIT).map(jobs.square, [3], on_result=seen.append, timeout=WAIT)
    ) == [9]
    assert seen == [9]
