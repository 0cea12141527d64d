"""``python -m jobpool advise module:function [args...]``: which backend, how many workers, and why.

It imports the user's function and calls it with the given arguments, measured:

1. serially, to learn the wall time of one call and how much of it was spent on the CPU (the
   calling thread's CPU time; pure-Python code holds the GIL whenever it is on the CPU);
2. what sending it to a process costs: pickling and unpickling the call and its result;
3. on the thread backend (with as many threads as CPUs, and with many more threads when that
   scales), which shows whether the function lets other threads run (waits, or C code that
   releases the GIL) or holds the GIL;
4. on the process backend with as many workers as CPUs, after the workers have started (their
   start-up is reported apart, being paid once per pool).

From the speedups over the serial run it recommends a backend and a worker count, and says why.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import math
import os
import pickle
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from . import _platform
from ._errors import SerializationError
from ._pool import Pool
from ._serialization import dumps

#: A pool must beat the alternative by this factor to be recommended over it.
MARGIN = 1.25
MAX_THREADS = 32
#: Measured batches of each kind, interleaved; the best of each is kept.
ROUNDS = 3


def usable_cpus() -> int:
    return _platform.usable_cpus()


def _thread_clock() -> tuple[float, float]:
    """This thread's (seconds on a CPU, seconds runnable but waiting for a CPU).

    The second is how long other load on the machine delayed it; Linux reports it in
    schedstat. Elsewhere it reads 0 and the results are plain wall-clock ones. The first comes
    from the thread's CPU clock, which is exact, not from schedstat, which some kernels bring
    up to date only at each timer tick (4 ms steps here, on calls of a few milliseconds).
    """
    on_cpu = time.thread_time()
    if not _platform.PROC:
        return on_cpu, 0.0
    try:
        with open("/proc/thread-self/schedstat") as f:
            _, waiting, _ = f.read().split()
        return on_cpu, int(waiting) / 1e9
    except (OSError, ValueError):
        return on_cpu, 0.0


class Timed:
    """Calls ``fn(*args, **kwargs)``; returns ``(wall, cpu, queued, result)`` (picklable).

    ``queued`` is the time the call was runnable but waiting for a CPU (other load).
    """

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def __call__(self, _: object = None) -> tuple[float, float, float, Any]:
        # The clock reads sit inside the wall interval: reading one may itself wait (for the
        # GIL, for a CPU), and that wait must not count as queued time outside the call.
        wall = time.perf_counter()
        cpu, queued = _thread_clock()
        result = self.fn(*self.args, **self.kwargs)
        cpu_after, queued_after = _thread_clock()
        wall = time.perf_counter() - wall
        return wall, cpu_after - cpu, queued_after - queued, result


@dataclass
class Run:
    """One measured batch of calls."""

    backend: str  # "serial", "thread" or "process"
    workers: int
    calls: int
    wall: float  # seconds for the whole batch
    cpu: float  # CPU seconds the calls used (sum over calls)
    net: float  # seconds the calls took, less the time they waited for a CPU (sum over calls)
    speedup: float = 1.0  # measured, against the serial rate
    estimate: float = 1.0  # on an idle machine: from per-call times without CPU waits
    startup: float = 0.0  # process pools: starting the workers, paid once
    waited: float = 0.0  # seconds taken off the calls' times as waits for a CPU (net's part)

    @property
    def efficiency(self) -> float:
        return self.speedup / self.workers


@dataclass
class Advice:
    """What ``advise`` measured and what it recommends."""

    target: str
    cpus: int
    call_wall: float  # seconds per call, serial
    cpu_ratio: float  # CPU time / wall time of a serial call
    gil_share: float  # estimated share of a call spent holding the GIL
    pickle_seconds: Optional[float]  # per call, args out and result back; None: unpicklable
    pickle_bytes: Optional[int]
    pickle_error: Optional[str]
    runs: list[Run] = field(default_factory=list)
    busy: float = 0.0  # share of the serial calls' time spent waiting for a CPU (other load)
    backend: str = "thread"  # "thread", "process" or "serial"
    workers: int = 1
    reasons: list[str] = field(default_factory=list)


def parse_value(text: str) -> Any:
    """A Python literal if ``text`` is one (``3``, ``0.5``, ``[1, 2]``), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_arguments(tokens: list[str]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``name=value`` tokens become keyword arguments, the others positional ones."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for token in tokens:
        name, sep, value = token.partition("=")
        if sep and name.isidentifier():
            kwargs[name] = parse_value(value)
        else:
            args.append(parse_value(token))
    return tuple(args), kwargs


def load_target(target: str) -> Callable[..., Any]:
    """Import ``module:function`` (or ``module:Class.method``), searching the working dir too."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected module:function, got {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj  # type: ignore[no-any-return]


Outcome = tuple[float, float, float, Any]


def _stolen() -> float:
    """Seconds the machine's CPUs were held back by its hypervisor so far (0 if unknown).

    On a virtual machine whose host is busy, a call is neither on a CPU nor waiting in this
    system's run queue for that time ("steal"), so it would look like time the call spent
    waiting on its own, and a CPU-bound function like one that also blocks.
    """
    if not _platform.PROC:
        return 0.0
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):  # no /proc/stat, or no sysconf
        return 0.0


def _run(backend: str, workers: int, start: float, outcomes: Iterable[Outcome]) -> Run:
    calls = 0
    cpu = wall = net = 0.0
    stolen = _stolen()
    for call_wall, call_cpu, queued, _ in outcomes:
        calls += 1
        cpu += call_cpu
        wall += call_wall
        net += max(call_cpu, call_wall - queued)
    # Only the batch runs while it is measured, so the CPUs' steal is what its calls lost.
    net = max(cpu, net - (_stolen() - stolen))
    elapsed = time.perf_counter() - start
    return Run(backend, workers, calls, elapsed, cpu, net, waited=max(0.0, wall - net))


def _serial(timed: Timed, calls: int) -> Run:
    return _run("serial", 1, time.perf_counter(), (timed() for _ in range(calls)))


def _pooled(pool: Pool, timed: Timed, calls: int) -> Run:
    start = time.perf_counter()
    return _run(pool.backend, pool.workers, start, pool.map(timed, range(calls)))


def _best(runs: list[Run], serial: Optional[Run], extra: float = 0.0) -> Run:
    """The fastest of repeated batches (the least disturbed by other load), with its speedups.

    ``estimate`` compares per-call times less CPU waits: a call on ``k`` threads that holds the
    GIL waits for it (k - 1) times its own CPU time, which counts; waiting for a CPU that other
    programs hold does not. ``extra``: per-call cost not seen inside the call (pickling).
    """
    best = min(runs, key=lambda run: run.wall / run.calls)
    if serial is not None:
        serial_call = serial.wall / serial.calls
        best.speedup = serial_call * best.calls / best.wall if best.wall > 0 else float("inf")
        # Per-call times pooled over every round: steadier than any one batch.
        per_call = sum(_net(run, serial) for run in runs) / sum(run.calls for run in runs) + extra
        serial_net = serial.net / serial.calls
        best.estimate = min(best.workers, best.workers * serial_net / per_call)
    return best


def _net(run: Run, serial: Run) -> float:
    """``run.net``, less for threads: a thread that waits for the GIL sleeps until the holder
    lets it go, then waits for a CPU, and on a busy machine that second wait is long, as other
    programs hold the CPUs. It is the GIL's wait all the same, which an idle machine would not
    remove. So threads are credited with waits for a CPU only at the rate the serial calls met
    them, per second on a CPU; beyond that, their waits count as the call's own time (as
    waiting for each other). A process waits for no GIL: each worker's waits for a CPU are
    other load's, or its siblings' on too few free CPUs, none of which an idle machine has."""
    if run.backend != "thread" or serial.cpu <= 0:
        return run.net
    allowed = run.cpu * serial.waited / serial.cpu
    return run.net + max(0.0, run.waited - allowed)


def _pickle_cost(timed: Timed, result: Any) -> tuple[Optional[float], Optional[int], Optional[str]]:
    """Seconds and bytes, per call, to send the call to a process and its result back; or
    why it cannot be sent."""
    try:
        seconds, size = _pickle_round_trips(timed, result)
    except SerializationError as exc:
        return None, None, str(exc)
    return seconds, size, None


def _pickle_round_trips(timed: Timed, result: Any) -> tuple[float, int]:
    rounds = 0
    size = 0
    start = time.perf_counter()
    while True:
        fn_bytes = dumps(timed.fn, "fn")
        body = dumps((timed.args, timed.kwargs), "job")
        result_bytes = dumps(result, "result")
        pickle.loads(fn_bytes)
        pickle.loads(body)
        pickle.loads(result_bytes)
        size = len(fn_bytes) + len(body) + len(result_bytes)
        rounds += 1
        elapsed = time.perf_counter() - start
        if rounds >= 50 or elapsed > 0.05:
            return elapsed / rounds, size


def _round_up(calls: int, workers: int) -> int:
    return max(2 * workers, workers * math.ceil(calls / workers))


def advise(
    fn: Callable[..., Any],
    args: tuple[Any, ...] = (),
    kwargs: Optional[dict[str, Any]] = None,
    *,
    budget: float = 1.0,
    workers: Optional[int] = None,
    target: str = "",
    on_batch: Optional[Callable[[str], None]] = None,
) -> Advice:
    """Measure ``fn(*args, **kwargs)`` serially and on each local backend; recommend one.

    ``budget`` is the rough wall time, in seconds, of the serial measurement (split into
    :data:`ROUNDS` batches interleaved with the pooled ones); ``workers`` the worker count to
    compare backends at (default: the CPUs this process may use, at least 2). ``on_batch`` is
    told what is about to be measured (``"serial"``, ``"2 threads"``...), for a progress line.
    """
    step = on_batch or _quiet
    timed = Timed(fn, args, kwargs or {})
    cpus = usable_cpus()
    base = max(2, workers or cpus)
    target = target or getattr(fn, "__qualname__", repr(fn))

    first_wall, _, _, result = timed()  # warm-up: imports, caches, and an early error if it fails
    calls = min(200, max(2, math.ceil(budget / ROUNDS / max(first_wall, 1e-6))))
    pickle_seconds, pickle_bytes, pickle_error = _pickle_cost(timed, result)
    serial_runs, thread_runs, process_runs, startup = _measure(
        timed, calls, base, with_processes=pickle_error is None, step=step
    )
    serial = _best(serial_runs, None)
    cpu_ratio = min(1.0, serial.cpu / serial.net) if serial.net > 0 else 1.0
    threads = _best(thread_runs, serial)
    runs = [serial, threads]
    best_thread = threads
    if threads.estimate >= 0.75 * threads.workers and cpu_ratio < 0.5:
        more = _many_threads(timed, calls, base, serial, step)
        runs.append(more)
        if more.estimate > best_thread.estimate:
            best_thread = more
    processes: Optional[Run] = None
    if process_runs:
        processes = _best(process_runs, serial, extra=pickle_seconds or 0.0)
        processes.startup = startup
        runs.append(processes)
    busy = 1.0 - serial.net / (serial.wall or 1.0)
    # Of a call's CPU time, the GIL is held at most 1 / (thread estimate) of it, when threads
    # could not overlap; pure-Python code holds it all the time it is on the CPU.
    gil_share = cpu_ratio * min(1.0, 1.0 / max(1.0, threads.estimate))
    advice = Advice(
        target=target,
        cpus=cpus,
        call_wall=serial.wall / serial.calls,
        cpu_ratio=cpu_ratio,
        gil_share=gil_share,
        pickle_seconds=pickle_seconds,
        pickle_bytes=pickle_bytes,
        pickle_error=pickle_error,
        runs=runs,
        busy=max(0.0, busy),
    )
    _decide(advice, best_thread, processes)
    _note(advice)
    return advice


def _quiet(_: str) -> None:
    pass


def _measure(
    timed: Timed, calls: int, base: int, with_processes: bool, step: Callable[[str], None] = _quiet
) -> tuple[list[Run], list[Run], list[Run], float]:
    """Serial, thread and process batches, interleaved; and the process pool's start-up."""
    pooled_calls = _round_up(calls, base)
    thread_runs: list[Run] = []
    process_runs: list[Run] = []
    serial_runs: list[Run] = []
    startup = 0.0
    with contextlib.ExitStack() as stack:
        thread_pool = stack.enter_context(Pool(base, backend="thread"))
        list(thread_pool.map(timed, range(base), chunksize=1))  # start the threads
        process_pool: Optional[Pool] = None
        if with_processes:
            step(f"starting {base} worker processes")
            start = time.perf_counter()
            process_pool = stack.enter_context(Pool(base, backend="process"))
            list(process_pool.map(timed, range(base), chunksize=1))  # each worker imports fn
            startup = time.perf_counter() - start
        # Interleaved rounds, best of each: a burst of other load on the machine then spoils
        # one batch of each kind, not the whole comparison.
        for round_ in range(1, ROUNDS + 1):
            step(f"one at a time, round {round_} of {ROUNDS}")
            serial_runs.append(_serial(timed, calls))
            step(f"on {base} threads, round {round_} of {ROUNDS}")
            thread_runs.append(_pooled(thread_pool, timed, pooled_calls))
            if process_pool is not None:
                step(f"on {base} processes, round {round_} of {ROUNDS}")
                process_runs.append(_pooled(process_pool, timed, pooled_calls))
    return serial_runs, thread_runs, process_runs, startup


def _many_threads(
    timed: Timed, calls: int, base: int, serial: Run, step: Callable[[str], None] = _quiet
) -> Run:
    """Calls that mostly wait may scale past one thread per CPU: try many more threads."""
    many = min(MAX_THREADS, 8 * base)
    step(f"on {many} threads")
    with Pool(many, backend="thread") as pool:
        return _best([_pooled(pool, timed, _round_up(calls, many)) for _ in range(2)], serial)


def _decide(advice: Advice, threads: Run, processes: Optional[Run]) -> None:
    """Pick from the idle-machine estimates, so other load on the machine does not sway it."""
    p_est = processes.estimate if processes is not None else 0.0
    t_est = threads.estimate
    if processes is not None and p_est > 1.1 and p_est > MARGIN * t_est:
        _choose_processes(advice, threads, processes)
    elif t_est > 1.1:
        _choose_threads(advice, threads, processes)
    else:
        advice.backend = "serial"
        advice.workers = 1
        advice.reasons.append(
            f"neither backend runs it faster than serial (threads {t_est:.1f}x"
            + (f", processes {p_est:.1f}x)" if processes is not None else ")")
        )


def _choose_processes(advice: Advice, threads: Run, processes: Run) -> None:
    cpu = advice.cpu_ratio
    advice.backend = "process"
    advice.workers = processes.workers
    if cpu < 0.7:  # the calls also wait: more processes than CPUs keep the CPUs busy
        advice.workers = min(2 * advice.cpus, math.ceil(processes.workers / max(cpu, 0.5)))
    advice.reasons.append(
        f"each call is on the CPU {cpu:.0%} of its time and holds the GIL ~"
        f"{advice.gil_share:.0%} of it, so threads wait for each other: "
        f"{threads.workers} threads reach {threads.estimate:.1f}x the serial speed, "
        f"{processes.workers} processes {processes.estimate:.1f}x"
    )
    advice.reasons.append(
        f"a process pool costs {processes.startup:.2f} s to start (once per pool): keep "
        "one pool open for many calls"
    )


def _choose_threads(advice: Advice, threads: Run, processes: Optional[Run]) -> None:
    cpu, t_est, why = advice.cpu_ratio, threads.estimate, advice.reasons
    advice.backend = "thread"
    advice.workers = max(threads.workers, min(MAX_THREADS, int(1 / max(cpu, 1 / MAX_THREADS))))
    if cpu < 0.5:
        why.append(
            f"each call waits {1 - cpu:.0%} of its time (on the CPU only {cpu:.0%}), and "
            f"waiting releases the GIL: {threads.workers} threads reach {t_est:.1f}x the "
            "serial speed"
        )
        why.append(
            f"about {advice.workers} threads keep one CPU busy at this ratio; if the calls "
            "wait on one service (a database, an API), its capacity is the real limit"
        )
    else:
        why.append(
            f"the calls use the CPU ({cpu:.0%} of their time) but release the GIL while "
            f"they do (C code): {threads.workers} threads reach {t_est:.1f}x the serial "
            "speed, without the start-up and pickling of processes"
        )
    if processes is not None:
        why.append(
            f"processes reach {processes.estimate:.1f}x, not enough better to pay for their "
            f"start-up ({processes.startup:.2f} s) and pickling on every call"
        )


def _note(advice: Advice) -> None:
    """What holds whatever the backend: pickling cost, very short calls, a busy machine."""
    why = advice.reasons
    pickling = advice.pickle_seconds
    if advice.pickle_error is not None:
        why.append(f"the process backend cannot run it: {advice.pickle_error}")
    elif pickling is not None and advice.call_wall > 0 and pickling / advice.call_wall > 0.1:
        why.append(
            f"pickling the call and its result costs {pickling / advice.call_wall:.0%} of a "
            "call: send less data (a path or a key instead of the data itself)"
        )
    if advice.call_wall < 0.001:
        why.append(
            f"a call takes only {advice.call_wall * 1e6:.0f} µs: use pool.map(), which batches "
            "short calls into chunks, rather than one submit() per call"
        )
    if advice.busy > 0.2:
        why.append(
            f"the machine is busy (calls waited {advice.busy:.0%} of their time for a CPU): "
            "measured speedups are low; the estimates discount that wait"
        )


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def format_advice(advice: Advice) -> str:
    lines = [f"jobpool advise: {advice.target} on {advice.cpus} CPU(s)", ""]
    lines.append(
        f"  one call     {_seconds(advice.call_wall)} wall; on the CPU {advice.cpu_ratio:.0%} of "
        f"it; holds the GIL ~{advice.gil_share:.0%}"
    )
    if advice.pickle_error is not None:
        lines.append("  pickling     not possible (see below)")
    elif advice.pickle_seconds is not None:
        lines.append(
            f"  pickling     {_seconds(advice.pickle_seconds)} per call "
            f"({advice.pickle_bytes} bytes out and back)"
        )
    lines.append("")
    lines.append(
        f"  {'run':<13}{'calls':>6}{'wall':>11}{'CPU':>11}{'measured':>10}{'idle est.':>11}"
    )
    for run in advice.runs:
        label = "serial" if run.backend == "serial" else f"{run.backend} x{run.workers}"
        lines.append(
            f"  {label:<13}{run.calls:>6}{_seconds(run.wall):>11}{_seconds(run.cpu):>11}"
            f"{run.speedup:>9.1f}x{run.estimate:>10.1f}x"
            + (f"   (+{_seconds(run.startup)} start-up)" if run.startup else "")
        )
    lines.append("")
    if advice.backend == "serial":
        lines.append("verdict: no pool helps this call as it is; run it serially")
    else:
        lines.append(f"verdict: Pool({advice.workers}, backend={advice.backend!r})")
    lines.extend(f"  - {reason}" for reason in advice.reasons)
    return "\n".join(lines)


def run_advise(
    target: str, tokens: list[str], budget: float = 1.0, workers: Optional[int] = None
) -> int:
    try:
        fn = load_target(target)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        print(f"jobpool advise: cannot load {target!r}: {exc}", file=sys.stderr)
        return 2
    args, kwargs = parse_arguments(tokens)
    shown = f"{target}({', '.join(tokens)})"
    print(format_advice(advise(fn, args, kwargs, budget=budget, workers=workers, target=shown)))
    return 0
