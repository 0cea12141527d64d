"""The fault campaign's model (tests/test_fault_campaign.py): what a scenario is, what a future
may end with, the *taints* a fault leaves on its worker, and the bookkeeping of one run.

A fault may leave its worker damaged for the jobs that run there after it (a worker that has no
descriptor left cannot even import a module). Such taints are named per fault, and widen only
the outcomes of the jobs that could meet them; in a scenario without them, an ordinary job's
result must be right.
"""

from __future__ import annotations

import sys
import threading
import traceback
import uuid
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import campaign_jobs as cj
import jobs
from conftest import WAIT, pool_kwargs
from jobpool import JobKilledError, Pool, WorkerCrashedError

THRESHOLD = 64 * 1024  # shared_memory_threshold of the campaign's pools
TIME_LIMIT = 0.25  # seconds: the time limit of the jobs that hang


# --- what a future may end with -------------------------------------------------------------

Expect = Callable[[Future], Optional[str]]  # None: this outcome is allowed; else what is wrong


def outcome_of(future: Future[Any]) -> str:
    if future.cancelled():
        return "cancelled"
    exc = future.exception(timeout=0)
    if exc is not None:
        return f"raised {type(exc).__name__}: {str(exc)[:300]}"
    return f"returned {reprlib_repr(future.result(timeout=0))}"


def reprlib_repr(value: Any) -> str:
    import reprlib

    return reprlib.repr(value)


def returns(check: Callable[[Any], bool], what: str) -> Expect:
    def expect(future: Future[Any]) -> Optional[str]:
        if future.cancelled() or future.exception(timeout=0) is not None:
            return f"expected it to return {what}"
        return None if check(future.result(timeout=0)) else f"expected {what}"

    return expect


def value(expected: Any) -> Expect:
    return returns(lambda got: bool(got == expected), reprlib_repr(expected))


def raises(kind: type[BaseException], check: Callable[[Any], bool] = lambda e: True) -> Expect:
    def expect(future: Future[Any]) -> Optional[str]:
        if future.cancelled():
            return f"expected {kind.__name__}"
        exc = future.exception(timeout=0)
        if not isinstance(exc, kind) or not check(exc):
            got = f"result {future.result(timeout=0)!r}" if exc is None else repr(exc)
            cause = "" if exc is None or exc.__cause__ is None else f" from {exc.__cause__!r}"
            return f"expected {kind.__name__}, got {got}{cause}"
        return None

    return expect


def cancelled(future: Future[Any]) -> Optional[str]:
    return None if future.cancelled() else "expected it cancelled"


def crashed(signal: Optional[str] = None, exitcode: Optional[int] = None) -> Expect:
    def check(exc: WorkerCrashedError) -> bool:
        return (signal is None or exc.signal == signal) and (
            exitcode is None or exc.exitcode == exitcode
        )

    return raises(WorkerCrashedError, check)


def out_of_descriptors(exc: BaseException) -> bool:
    """An error a job gets in a worker that another job left without descriptors."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == 24:
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


KILLED_OR_CANCELLED: list[Expect] = [raises(JobKilledError), cancelled]


# --- taints: what a fault may leave broken in its worker for the jobs after it ------------------

DESCRIPTORS = "no descriptor left"  # the worker's descriptors are all taken
SEGMENTS = "no shared-memory socket"  # the worker's shared-memory socket is closed
# A job sent its own reply ahead of the worker's: the worker's own reply then comes out of
# turn, and the worker is killed with whatever job it runs by then (any job, on that worker).
SECOND_REPLY = "a second reply"


@dataclass
class Tracked:
    """One future and what it may end with; its done-callbacks are counted."""

    future: Future[Any]
    fault: str
    expect: list[Expect]
    calls: int = 0


@dataclass
class Figures:
    """What a campaign ran (printed at its end)."""

    examples: int = 0
    jobs: int = 0
    map_items: int = 0
    restarts: int = 0
    failures: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    endings: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def as_dict(self, backend: str, seed_used: int) -> dict[str, Any]:
        import time

        return {
            "backend": backend,
            "seed": seed_used,
            "seconds": round(self.seconds),
            "scenarios": self.examples,
            "jobs": self.jobs,
            "map_items": self.map_items,
            "restarts": self.restarts,
            "failures": self.failures,
            "faults": dict(sorted(self.faults.items())),
            "endings": dict(sorted(self.endings.items())),
            "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d"),
        }

    def report(self, backend: str, seed_used: int) -> str:
        lines = [
            f"fault campaign on {backend}: {self.examples} scenarios in {self.seconds:.0f} s "
            f"(seed {seed_used}): {self.jobs} jobs submitted and {self.map_items} map items, "
            f"{self.restarts} worker restarts, {self.failures} failures",
            "  endings: " + ", ".join(f"{k} {v}" for k, v in sorted(self.endings.items())),
            "  faults: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())),
        ]
        return "\n".join(lines)


# --- a scenario ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    fault: str
    n: int  # a small number the fault uses: a value, an item's index, a size

    def __repr__(self) -> str:
        return f"{self.fault}({self.n})"


@dataclass(frozen=True)
class Scenario:
    workers: int
    max_pending: Optional[int]
    max_jobs_per_worker: Optional[int]
    initializer: bool
    threads: tuple[tuple[Step, ...], ...]
    ending: str


def all_steps(scenario: Scenario) -> list[Step]:
    return [item for steps in scenario.threads for item in steps]


ENDINGS = ["shutdown", "shutdown-cancel", "terminate", "shutdown-while-submitting"]


class Run:
    """One scenario being run: the pool, the tether, what was submitted and what it may be."""

    def __init__(self, backend: str, scenario: Scenario, directory: str, taints: set[str]) -> None:
        self.backend = backend
        self.process = backend != "thread"
        self.scenario = scenario
        self.directory = directory  # pids of the processes jobs left running, one file each
        self.tether = cj.Tether()
        self.token = uuid.uuid4().hex  # what the initializer sets
        kwargs: dict[str, Any] = dict(pool_kwargs(backend))
        if scenario.initializer:
            kwargs.update(initializer=jobs.set_state, initargs=(self.token,))
        if self.process:
            kwargs.update(
                shared_memory_threshold=THRESHOLD, max_jobs_per_worker=scenario.max_jobs_per_worker
            )
        self.pool = Pool(scenario.workers, max_pending=scenario.max_pending, **kwargs)
        self.lock = threading.Lock()
        self.resolved = threading.Condition(self.lock)
        self.tracked: list[Tracked] = []
        self.problems: list[str] = []  # found by the submitting threads
        self.figures = Figures()
        self.held_slots = threading.Semaphore(max(0, scenario.workers - 1))
        self.taints = taints  # what the scenario's faults may leave broken (see campaign_steps)
        self.shut = threading.Event()  # the pool was shut down while threads still submit
        self.going = threading.Event()  # a job was accepted, or a submitting thread is done

    # --- bookkeeping ---------------------------------------------------------------------------

    def track(self, future: Future[Any], fault: str, *expect: Expect) -> Tracked:
        tracked = Tracked(future, fault, list(expect))
        if self.shut.is_set():  # submitted while another thread shuts the pool down
            tracked.expect.append(cancelled)
        if SECOND_REPLY in self.taints:
            tracked.expect.append(crashed())
        if DESCRIPTORS in self.taints:  # even an import fails there
            tracked.expect.append(raises(BaseException, out_of_descriptors))

        def resolved(_: Future[Any]) -> None:
            with self.resolved:
                tracked.calls += 1
                self.resolved.notify_all()

        with self.lock:
            self.tracked.append(tracked)
            self.figures.jobs += 1
        self.going.set()
        future.add_done_callback(resolved)
        future.add_done_callback(self.tether.notify)
        return tracked

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def needs(self, *taints: str) -> list[Expect]:
        """What else a job that needs these may end with, given the scenario's taints (those
        every job may suffer are added by ``track``)."""
        extra: list[Expect] = []
        if SEGMENTS in taints and SEGMENTS in self.taints:
            # It could not be sent to that worker, or (sent ahead before the socket closed)
            # its data could not be received there.
            extra.append(raises(WorkerCrashedError))
            extra.append(raises(OSError, lambda e: "could not be received" in str(e)))
        return extra

    def large(self, n: int) -> bytes:
        return bytes(range(256)) * ((THRESHOLD + 4096 * (n + 1)) // 256)

    def tag(self) -> str:
        return uuid.uuid4().hex[:12]


def wait_for(tracked: Tracked, run: Optional[Run] = None) -> None:
    """Until the future is done, with a deadline."""
    from concurrent.futures import wait

    if wait([tracked.future], timeout=WAIT).not_done:
        raise AssertionError(
            f"{tracked.fault}: not done within {WAIT} s" + (diagnosis(run) if run else "")
        )


def diagnosis(run: Run) -> str:
    """What the pool and every thread of this process are doing (for a run that hangs)."""
    lines = [f"\n--- {run.pool!r}: {run.pool.stats()}"]
    dispatcher = getattr(run.pool._backend, "_dispatcher", None)
    if dispatcher is not None:
        handles = dispatcher.call(lambda: [repr(h) for h in dispatcher.workers.handles], 10)
        lines.append(f"workers (from the dispatcher thread): {handles}")
        lines.append(f"waiting in line: {dispatcher.line.waiting()}")
    frames = sys._current_frames()
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            stack = "".join(traceback.format_stack(frame)[-6:])
            lines.append(f"--- thread {thread.name}:\n{stack}")
    return "\n".join(lines)


class _Later(threading.local):
    """What a thread does after its next step (a held job's release)."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def set(self, fn: Callable[[], None]) -> None:
        self.pending.append(fn)

    def run(self) -> None:
        pending, self.pending = self.pending, []
        for fn in pending:
            fn()


run_later = _Later()
