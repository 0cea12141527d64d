"""One job at a time: submit -> result, N times in sequence; and the bare pipe floor.

The floor is a ``multiprocessing.Pipe`` round trip of a pickled ``(fn, (x,), {})`` to a forked
child that unpickles it, calls it and sends back the pickled result: what any process pool pays
at least, measured in the same run: in a child of its own (the floor row), and in each process
pool's own child, batch for batch alternating with the pool's (``x_floor``, the median of the
paired ratios: what the goal reads).
"""

from __future__ import annotations

import multiprocessing
import pickle
import time
from multiprocessing.connection import Connection
from typing import Any

from ..common import WORKERS, Task, row
from ..impls import PROCESS_IMPLS, make
from ..jobs import inc

NAME = "roundtrip"
TITLE = "round trip: N sequential submit -> result() of inc(x), 2 workers; floor = bare Pipe"
COLUMNS = [
    ("us_per_job", "us/round trip", "{:.1f}"),
    ("x_floor", "x floor, paired", "{:.2f}"),
]
PRIMARY = "us_per_job"
HIGHER_IS_BETTER = False
ROUNDS = 3
FLOOR = "floor: mp.Pipe + pickle"

IMPLS = [
    FLOOR,
    "jobpool[thread]",
    "cf.ThreadPoolExecutor",
    *[i for i in PROCESS_IMPLS if not i.startswith("joblib")],
]


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    params = {"n": 50, "reps": 2} if quick else {"n": 1000, "reps": 3}
    return [Task(NAME, impl, params, timeout=300) for impl in IMPLS]


def _echo(conn: Connection) -> None:
    while True:
        data = conn.recv_bytes()
        if not data:
            return
        fn, args, kwargs = pickle.loads(data)
        conn.send_bytes(pickle.dumps(fn(*args, **kwargs), pickle.HIGHEST_PROTOCOL))


def _floor(params: dict[str, Any]) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("fork")
    conn, child_conn = context.Pipe()
    process = context.Process(target=_echo, args=(child_conn,), daemon=True)
    process.start()
    child_conn.close()
    samples = []
    try:
        for rep in range(params["reps"] + 1):
            start = time.perf_counter()
            for i in range(params["n"]):
                conn.send_bytes(pickle.dumps((inc, (i,), {}), pickle.HIGHEST_PROTOCOL))
                pickle.loads(conn.recv_bytes())
            if rep:  # the first repetition is a warm-up
                samples.append((time.perf_counter() - start) / params["n"] * 1e6)
    finally:
        conn.send_bytes(b"")
        process.join(5)
        if process.exitcode is None:
            process.kill()
            process.join()
    out = row(FLOOR, "process", "send_bytes/recv_bytes", us_per_job=samples)
    out["ref"] = None
    return [out]


class _PairedFloor:
    """The floor measured in the same process as a pool, batch for batch, so that each ratio
    compares two numbers taken within the same second: the load of a shared machine moves the
    floor as much as the pools (20-60 us here within one run), which a ratio of medians taken
    in separate processes minutes apart does not cancel."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=_echo, args=(child_conn,), daemon=True)
        self.process.start()
        child_conn.close()

    def batch(self, n: int) -> float:
        """Microseconds per round trip over ``n``."""
        start = time.perf_counter()
        for i in range(n):
            self.conn.send_bytes(pickle.dumps((inc, (i,), {}), pickle.HIGHEST_PROTOCOL))
            pickle.loads(self.conn.recv_bytes())
        return (time.perf_counter() - start) / n * 1e6

    def close(self) -> None:
        self.conn.send_bytes(b"")
        self.process.join(5)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    if impl == FLOOR:
        return _floor(params)
    adapter = make(impl)
    adapter.open(WORKERS)
    paired = _PairedFloor() if adapter.flavour == "process" else None
    samples, ratios = [], []
    try:
        adapter.warm(inc, WORKERS)
        if paired is not None:
            paired.batch(params["n"])  # warm-up
        for rep in range(params["reps"]):
            floor = paired.batch(params["n"]) if paired is not None and rep % 2 == 0 else None
            start = time.perf_counter()
            for i in range(params["n"]):
                adapter.result(adapter.submit(inc, i))
            mine = (time.perf_counter() - start) / params["n"] * 1e6
            if paired is not None and floor is None:
                floor = paired.batch(params["n"])
            samples.append(mine)
            if floor:
                ratios.append(mine / floor)
    finally:
        adapter.close()
        if paired is not None:
            paired.close()
    metrics: dict[str, list[float]] = {"us_per_job": samples}
    if ratios:
        metrics["x_floor"] = ratios
    return [row(impl, adapter.flavour, adapter.submit_api, **metrics)]
