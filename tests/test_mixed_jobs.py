"""Random mixes of succeeding, raising and slow jobs: every future resolves once, correctly."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import Future
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jobs
from conftest import WAIT, pool_kwargs
from jobpool import Pool

job_specs = st.lists(
    st.tuples(st.sampled_from(["ok", "raise", "slow"]), st.integers(-1000, 1000)),
    min_size=1,
    max_size=40,
)


def run_mix(pool: Pool, specs: list[tuple[str, int]]) -> None:
    callbacks: Counter[int] = Counter()
    lock = threading.Lock()
    futures: list[Future[Any]] = []
    for index, (kind, value) in enumerate(specs):
        if kind == "ok":
            future = pool.submit(jobs.square, value)
        elif kind == "raise":
            future = pool.submit(jobs.raise_value_error, f"item {index}")
        else:
            future = pool.submit(jobs.sleep_for, abs(value) / 100_000)

        def count(_: Future[Any], index: int = index) -> None:
            with lock:
                callbacks[index] += 1

        future.add_done_callback(count)
        futures.append(future)
    for index, ((kind, value), future) in enumerate(zip(specs, futures)):
        if kind == "ok":
            assert future.result(WAIT) == value * value
        elif kind == "raise":
            error = future.exception(WAIT)
            assert isinstance(error, ValueError) and str(error) == f"item {index}"
        else:
            assert future.result(WAIT) == abs(value) / 100_000
    assert callbacks == Counter(range(len(specs)))


def check_mixes(backend: str, max_examples: int) -> None:
    """One pool serves every generated mix, so a bug that leaks state between mixes shows."""
    with Pool(3, **pool_kwargs(backend)) as pool:

        @settings(
            max_examples=max_examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(specs=job_specs)
        def check(specs: list[tuple[str, int]]) -> None:
            run_mix(pool, specs)

        check()


def test_thread_mix() -> None:
    check_mixes("thread", 25)


def test_process_mix() -> None:
    check_mixes("process-fork", 15)
