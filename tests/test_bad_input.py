"""Bad arguments give clear errors naming the problem, and lose nothing already submitted."""

from __future__ import annotations

from typing import Any

import pytest

import jobs
from conftest import WAIT, MakePool
from jobpool import Pool


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"workers": 0}, ValueError, "workers must be at least 1"),
        ({"workers": -2}, ValueError, "workers"),
        ({"workers": "4"}, TypeError, "workers must be an int"),
        ({"workers": 2.5}, TypeError, "workers must be an int"),
        ({"workers": True}, TypeError, "workers must be an int"),
        ({"backend": "proc"}, ValueError, "'thread', 'process', 'dask'"),
        ({"backend": None}, ValueError, "unknown backend"),
        ({"max_pending": 0}, ValueError, "max_pending"),
        ({"workers": 2, "max_workers": 3}, TypeError, "alias"),
        ({"job_timeout": 0}, ValueError, "job_timeout"),
        ({"job_timeout": -1}, ValueError, "job_timeout"),
        ({"backend": "process", "max_jobs_per_worker": 0}, ValueError, "max_jobs_per_worker"),
        ({"initializer": 5}, TypeError, "initializer"),
        ({"start_method": "spawn"}, ValueError, "start_method= applies only to backend='process'"),
        ({"backend": "process", "start_method": "teleport"}, ValueError, "unknown start_method"),
        ({"max_jobs_per_worker": 2}, ValueError, "only to backend='process'"),
        ({"address": "tcp://x:1"}, ValueError, "only to backend='dask'"),
    ],
)
def test_constructor_rejects(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Pool(**kwargs)


def test_non_callables_are_rejected_and_nothing_is_lost(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend)
    queued = [pool.submit(jobs.square, i) for i in range(5)]
    with pytest.raises(TypeError, match="callable"):
        pool.submit(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        pool.submit_nowait("not a function")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        pool.map(None, [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="at least one iterable"):
        pool.map(jobs.square)
    with pytest.raises(ValueError, match="chunksize"):
        pool.map(jobs.square, [1], chunksize=0)
    with pytest.raises(ValueError, match="timeout"):
        pool.options(timeout=0)
    assert [f.result(WAIT) for f in queued] == [0, 1, 4, 9, 16]
    assert pool.stats().submitted == 5
