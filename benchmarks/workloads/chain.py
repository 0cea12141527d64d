"""A chain of N dependent trivial jobs: each one's future the next one's argument (issue 26).

Three ways to run ``x = inc(x)`` N times on a pool, timed per link, in one child process per
backend so that each pair is measured side by side:

- **futures**: ``f = pool.submit(inc, f)`` N times, then ``f.result()``: the pool hands each
  result to the next job itself (on Dask, as a Dask dependency);
- **caller waits**: ``f = pool.submit(inc, f.result())``: the caller waits for each result and
  submits the next job, which is what one writes without futures as arguments;
- **raw Dask** (Dask backend only): ``f = client.submit(inc, f)`` N times on the same cluster
  and client, then ``f.result()``: Dask's own chain, which the scheduler runs with no round trip
  through the client at all.

Each repetition runs the variants in turn, the order alternating, and the tables show medians.
A Dask link costs milliseconds, so the Dask chain is 2,000 jobs long (N = 10,000 elsewhere).
The goal: futures no slower than waiting in the caller on every backend. The Dask cluster is a
``LocalCluster`` of 2 worker processes x 1 thread on loopback (as ``benchmarks/dask_bench.py``),
shared by the pool (``client=``) and raw Dask.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any, Callable

from ..common import WORKERS, Task, row
from ..jobs import inc

NAME = "chain"
TITLE = "chain of N dependent trivial jobs inc(prev): futures as arguments vs the caller waiting"
COLUMNS = [("us_per_job", "us/link", "{:.1f}")]
PRIMARY = "us_per_job"
HIGHER_IS_BETTER = False
ROUNDS = 2

FUTURES, CALLER, RAW = "futures", "caller waits", "raw Dask client.submit"
# The table's ratio: against the caller waiting, and on Dask against Dask's own chain; derive()
# adds the ratio against the caller waiting on Dask too.
REFERENCE = {
    "thread": f"jobpool[thread] {CALLER}",
    "process": f"jobpool[process] {CALLER}",
    "dask": RAW,
}
SKIPPED: dict[str, str] = {}


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    params = {"n": 200, "reps": 2} if quick else {"n": 10_000, "reps": 3}
    out = [Task(NAME, backend, params, timeout=1800) for backend in ("thread", "process")]
    if importlib.util.find_spec("distributed") is None:
        SKIPPED["jobpool[dask]"] = "distributed is not installed"
        return out
    # A Dask link costs milliseconds (scheduler round trips): a shorter chain, as many reps.
    dask_params = {"n": 100, "reps": 2} if quick else {"n": 2_000, "reps": 3}
    return [*out, Task(NAME, "dask", dask_params, timeout=1800)]


def _futures_chain(pool: Any, n: int) -> float:
    start = time.perf_counter()
    future = pool.submit(inc, 0)
    for _ in range(n - 1):
        future = pool.submit(inc, future)
    assert future.result() == n
    return time.perf_counter() - start


def _caller_chain(pool: Any, n: int) -> float:
    start = time.perf_counter()
    future = pool.submit(inc, 0)
    for _ in range(n - 1):
        future = pool.submit(inc, future.result())
    assert future.result() == n
    return time.perf_counter() - start


def _raw_dask_chain(client: Any, n: int) -> float:
    start = time.perf_counter()
    future = client.submit(inc, 0, pure=False)
    for _ in range(n - 1):
        future = client.submit(inc, future, pure=False)
    assert future.result() == n
    return time.perf_counter() - start


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    from jobpool import Pool

    n, reps = params["n"], params["reps"]
    cluster = client = None
    if impl == "dask":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
        )
        client = Client(cluster, set_as_default=False)
        pool = Pool(WORKERS, backend="dask", client=client)
    else:
        pool = Pool(WORKERS, backend=impl)
    variants: dict[str, Callable[[], float]] = {
        FUTURES: lambda: _futures_chain(pool, n),
        CALLER: lambda: _caller_chain(pool, n),
    }
    if client is not None:
        variants[RAW] = lambda: _raw_dask_chain(client, n)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    try:
        _warm(pool, client)
        for rep in range(reps):
            names = list(variants) if rep % 2 == 0 else list(variants)[::-1]
            for name in names:
                samples[name].append(variants[name]() / n * 1e6)
    finally:
        pool.shutdown(wait=True)
        if client is not None:
            client.close()
            cluster.close()  # type: ignore[union-attr]
    rows = []
    for name, values in samples.items():
        label = RAW if name == RAW else f"jobpool[{impl}] {name}"
        api = {FUTURES: "submit(inc, future)", CALLER: "submit(inc, future.result())"}.get(
            name, "client.submit(inc, future)"
        )
        out = row(label, impl, api, us_per_job=values)
        if name == RAW:
            out["ref"] = None
        rows.append(out)
    return rows


def _warm(pool: Any, client: Any) -> None:
    """A short chain of each kind before the timed ones: workers started, functions known."""
    _futures_chain(pool, 50)
    _caller_chain(pool, 50)
    if client is not None:
        _raw_dask_chain(client, 50)


def derive(rows: list[dict[str, Any]], params: dict[str, Any]) -> None:
    """Each futures row: its speed against the caller waiting on the same backend (> 1: the
    futures chain is faster), the goal of issue 26."""
    from ..common import median

    by_impl = {r["impl"]: r for r in rows}
    for r in rows:
        if not r["impl"].endswith(FUTURES):
            continue
        caller = by_impl.get(r["impl"][: -len(FUTURES)] + CALLER)
        mine = median(r["metrics"]["us_per_job"])
        theirs = median(caller["metrics"]["us_per_job"]) if caller else None
        if mine and theirs:
            r["info"]["speed x caller waits"] = f"{theirs / mine:.2f}"
