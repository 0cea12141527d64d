"""The same Pool on a Dask cluster: here a LocalCluster of 2 worker processes on this machine.

On a real cluster only the address changes: start ``dask scheduler`` and ``dask worker`` on your
machines (see docs/dask.md) and pass ``address="tcp://scheduler-host:8786"``. Needs the Dask
extra: pip install "jobpool[dask]" (from a checkout of jobpool: pip install ".[dask]").

Run: python examples/dask_cluster.py
"""

from __future__ import annotations

import os

try:
    from distributed import Client, LocalCluster
except ImportError:
    raise SystemExit(
        "this example needs the Dask extra (the distributed package): "
        'pip install "jobpool[dask]", or from a checkout of jobpool: pip install ".[dask]"'
    ) from None

from jobpool import Pool


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def check_positive(x: int) -> int:
    if x <= 0:
        raise ValueError(f"{x} is not positive")
    return x


def main() -> None:
    # The guard below matters: Dask starts its worker processes with "spawn", which re-imports
    # this script in each of them. This cluster speaks plain TCP, as Dask's documentation shows
    # it: any local user can reach it and run code as you (the pool's own cluster, without
    # address= or client=, admits only the pool; see docs/dask.md, "Security").
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        print(f"cluster at {address}; this process is {os.getpid()}")

        # address=: the pool connects its own client and closes it (never the cluster).
        with Pool(2, backend="dask", address=address) as pool:
            steps = list(pool.map(collatz_steps, range(1, 10_001)))
            print("longest Collatz chain below 10,001:", max(steps), "steps")

            # Lambdas and closures travel (pickled by value); results come back in order.
            scale = 10
            print(list(pool.map(lambda x: x * scale, range(5))))

            # The job's own exception, with the traceback from the worker as its __cause__.
            try:
                pool.submit(check_positive, -1).result()
            except ValueError as exc:
                print("ValueError from the cluster:", exc)

            pids = set(pool.map(lambda _: os.getpid(), range(20), chunksize=1))
            print(f"jobs ran in {len(pids)} worker process(es), none of them this one")
            print(pool.stats())

        # client=: the pool uses your client and leaves it open.
        with Client(address, set_as_default=False) as client:
            with Pool(2, backend="dask", client=client) as pool:
                print("sum of squares:", sum(pool.map(lambda x: x * x, range(1000))))
            print("client still open:", client.status)


if __name__ == "__main__":
    main()
