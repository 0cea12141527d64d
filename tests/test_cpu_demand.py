"""A big pool stops growing once its workers want every CPU, unless their jobs wait on I/O.

``Pool(workers=50)`` with hundreds of jobs shorter than a worker's start: once as many workers
hold jobs as there are CPUs, another starts only if their jobs leave CPU time unused
(``_cpu_demand``: the kernel's count of the time each ran or waited to run). The decision
and the measurement are tested on their own with given numbers, and on a real pool whose
workers' demand is set by the test (``runnable_ns`` replaced), so that nothing depends on
what else this machine runs.
"""

from __future__ import annotations

import os
import time
from typing import Optional

import pytest

import jobs
from conftest import START_METHODS, WAIT, MakePool
from jobpool import _platform
from jobpool._process import _cpu_demand, _workers
from jobpool._process._cpu_demand import SAMPLE_SECONDS, CpuDemand, cpus_taken, runnable_ns

GROWING = [m for m in START_METHODS if m != "fork"]

# --- the decision --------------------------------------------------------------------------------


def test_fewer_workers_than_cpus_never_take_them_all() -> None:
    assert not cpus_taken([1.0], 0, 2)
    assert not cpus_taken([], 1, 2)


def test_workers_that_run_or_wait_all_the_time_take_every_cpu() -> None:
    assert cpus_taken([1.0, 1.0], 0, 2)
    assert cpus_taken([0.9, 0.7], 0, 2)  # the parent's own threads take some of the time


def test_a_starting_worker_counts_as_wanting_a_cpu() -> None:
    assert cpus_taken([1.0], 1, 2)
    assert cpus_taken([], 2, 2)


def test_workers_waiting_on_io_leave_cpus_free() -> None:
    assert not cpus_taken([0.2, 0.3], 0, 2)
    assert not cpus_taken([0.1] * 10, 0, 2)
    assert cpus_taken([0.2] * 10, 0, 2)  # enough of them want every CPU again


def test_an_unknown_demand_holds_nothing_back() -> None:
    assert not cpus_taken([1.0, None], 0, 2)
    assert not cpus_taken([None, None, None], 0, 2)


# --- the measurement -----------------------------------------------------------------------------


class FakeSchedstat:
    """``runnable_ns`` for made-up processes: the test says how many nanoseconds each ran."""

    def __init__(self) -> None:
        self.ns: dict[int, Optional[int]] = {}
        self.reads = 0

    def __call__(self, pid: int) -> Optional[int]:
        self.reads += 1
        return self.ns.get(pid)


@pytest.fixture
def schedstat(monkeypatch: pytest.MonkeyPatch) -> FakeSchedstat:
    fake = FakeSchedstat()
    monkeypatch.setattr(_cpu_demand, "runnable_ns", fake)
    return fake


def test_a_share_is_the_time_run_or_waited_over_the_time_passed(schedstat: FakeSchedstat) -> None:
    window = 2 * SAMPLE_SECONDS
    schedstat.ns[7] = 1_000_000_000
    demand = CpuDemand(7, 100.0)
    schedstat.ns[7] += int(window * 1e9 / 2)  # half the window
    assert demand.share(100.0 + window) == pytest.approx(0.5)
    schedstat.ns[7] += int(window * 1e9)  # all of the next one
    assert demand.share(100.0 + 2 * window) == pytest.approx(1.0)


def test_a_share_is_read_again_only_after_a_sample_s_time(schedstat: FakeSchedstat) -> None:
    window = 2 * SAMPLE_SECONDS
    schedstat.ns[7] = 0
    demand = CpuDemand(7, 0.0)
    schedstat.ns[7] = int(window * 1e9)
    assert demand.share(window) == pytest.approx(1.0)
    reads = schedstat.reads
    # it slept since: not seen until the next sample
    assert demand.share(window + SAMPLE_SECONDS / 2) == pytest.approx(1.0)
    assert schedstat.reads == reads
    assert demand.share(2 * window) == pytest.approx(0.0)
    assert schedstat.reads == reads + 1


def test_a_share_stays_between_nothing_and_all(schedstat: FakeSchedstat) -> None:
    schedstat.ns[7] = 0
    demand = CpuDemand(7, 0.0)
    schedstat.ns[7] = int(5 * SAMPLE_SECONDS * 1e9)  # more than the time passed: a bad count
    assert demand.share(2 * SAMPLE_SECONDS) == 1.0
    schedstat.ns[7] = 0  # counters that went back: a reused pid
    assert demand.share(4 * SAMPLE_SECONDS) == 0.0


def test_a_worker_with_nothing_to_read_has_no_share(schedstat: FakeSchedstat) -> None:
    assert CpuDemand(7, 0.0).share(1.0) is None  # never readable (no /proc)
    assert CpuDemand(None, 0.0).share(1.0) is None  # no pid
    schedstat.ns[8] = 0
    gone = CpuDemand(8, 0.0)
    schedstat.ns[8] = None  # exited
    assert gone.share(1.0) is None
    schedstat.ns[8] = 10  # and not read again
    assert gone.share(2.0) is None


@pytest.mark.linux_only("proc")
def test_the_kernel_counts_this_process_running() -> None:
    before = runnable_ns(os.getpid())
    assert before is not None
    end = time.process_time() + 0.02
    while time.process_time() < end:  # runs: the count must grow by about as much
        pass
    after = runnable_ns(os.getpid())
    assert after is not None and after - before >= 10_000_000


def test_nothing_is_read_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_platform, "PROC", False)
    assert runnable_ns(os.getpid()) is None


def test_a_process_that_is_not_there_has_no_count() -> None:
    assert runnable_ns(2**22 + 12345) is None  # above Linux's largest pid


# --- a real pool ---------------------------------------------------------------------------------


class Demand:
    """The workers' demand as the test sets it: ``runnable_ns`` counts the time passed (they
    want a CPU all the time) or nothing (they wait on I/O all the time), and says whether the
    pool asked at all."""

    def __init__(self, wants_cpu: bool) -> None:
        self.wants_cpu = wants_cpu
        self.asked = 0

    def __call__(self, pid: int) -> int:
        self.asked += 1
        return time.monotonic_ns() if self.wants_cpu else 0


@pytest.fixture
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pools made from now on see 2 CPUs, whatever this machine has."""
    monkeypatch.setattr(_workers, "cpus_allowed", lambda: 2)


@pytest.fixture
def no_long_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """No job runs long enough to start a worker past the CPU count by itself (a stalled
    machine could make a job of a millisecond look as long as a start)."""
    monkeypatch.setattr(_workers, "LONG_JOB_STARTS", 1e9)


def wants_cpu(monkeypatch: pytest.MonkeyPatch, wants: bool) -> Demand:
    demand = Demand(wants)
    monkeypatch.setattr(_cpu_demand, "runnable_ns", demand)
    return demand


@pytest.mark.usefixtures("two_cpus", "no_long_jobs")
@pytest.mark.parametrize("method", GROWING)
def test_workers_that_take_every_cpu_hold_a_big_pool_at_the_cpu_count(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    demand = wants_cpu(monkeypatch, True)
    pool = make_pool(f"process-{method}", workers=50)
    # Two seconds of work for one worker: enough to want more, whatever a start takes here.
    futures = [pool.submit(jobs.sleep_for, 0.002) for _ in range(1000)]
    assert [f.result(WAIT) for f in futures] == [0.002] * 1000
    assert demand.asked > 0  # the pool wanted a worker past the CPU count, and asked
    assert pool.stats().workers <= 2


@pytest.mark.usefixtures("two_cpus", "no_long_jobs")
@pytest.mark.parametrize("method", GROWING)
def test_workers_that_wait_on_io_let_a_big_pool_grow_past_the_cpu_count(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch, gate: jobs.StartGate, method: str
) -> None:
    demand = wants_cpu(monkeypatch, False)
    pool = make_pool(f"process-{method}", workers=50)
    held = [pool.submit(jobs.gate_job, gate.address, i, i) for i in range(4)]
    assert len({gate.wait_for(i) for i in range(4)}) == 4  # all four at once, on 2 CPUs
    for i in range(4):
        gate.release(i)
    assert [f.result(WAIT) for f in held] == list(range(4))
    assert demand.asked > 0


@pytest.mark.usefixtures("two_cpus")
@pytest.mark.parametrize("method", GROWING)
def test_long_jobs_grow_a_pool_whose_workers_take_every_cpu(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch, gate: jobs.StartGate, method: str
) -> None:
    """A job queued behind long ones gets a worker of its own, as in the stdlib's pool."""
    wants_cpu(monkeypatch, True)
    pool = make_pool(f"process-{method}", workers=50)
    held = [pool.submit(jobs.gate_job, gate.address, i, i) for i in range(4)]
    assert len({gate.wait_for(i) for i in range(4)}) == 4
    for i in range(4):
        gate.release(i)
    assert [f.result(WAIT) for f in held] == list(range(4))


@pytest.mark.parametrize("method", GROWING)
def test_a_pool_at_its_size_never_reads_the_workers_demand(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch, gate: jobs.StartGate, method: str
) -> None:
    """The demand costs a read of /proc per worker: asked only while the pool could grow, so
    a pool with all its workers (the usual 2 or 4) pays nothing for it per job."""
    demand = wants_cpu(monkeypatch, True)
    pool = make_pool(f"process-{method}", workers=2)
    held = [pool.submit(jobs.gate_job, gate.address, i, i) for i in range(2)]
    assert len({gate.wait_for(i) for i in range(2)}) == 2  # both workers up
    for i in range(2):
        gate.release(i)
    assert [f.result(WAIT) for f in held] == [0, 1]
    assert pool.stats().workers == 2
    asked = demand.asked
    futures = [pool.submit(abs, -i) for i in range(500)]
    assert [f.result(WAIT) for f in futures] == list(range(500))
    assert demand.asked == asked
