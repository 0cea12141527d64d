"""The fault campaign (issue 23): ordinary jobs mixed with hostile ones, from several threads at
once, on every start method and on threads; afterwards every future resolved exactly once with
the outcome its fault implies, the pool answered a fresh job, and nothing was left behind.

Hypothesis draws a *scenario*: a pool (workers, ``max_pending``, recycling, an initializer),
one to four submitting threads, each with a list of steps (a fault and a small number it uses),
and how the run ends (``shutdown``, ``shutdown(cancel_futures=True)``, ``terminate()``, or a
``shutdown`` from another thread while the submitters still submit). The threads start together
behind a barrier. Each step submits or maps jobs that fork (and return, exec, or leave the child
running), leave threads, exhaust or close descriptors (their own fds 0-2, the worker's job pipe,
recall pipe or shared-memory socket), return unpicklable or unloadable results, raise
unpicklable exceptions, crash (segfault, ``os._exit``, SIGKILL), hang past a time limit, write
on the worker's pipe, or are killed or cancelled by the caller; or maps with one bad item.

After each scenario: every future's done-callbacks ran exactly once and its outcome is one its
fault (and what the caller did to it) allows; ``stats()`` adds up; the pool answered a fresh job;
after shutdown no process of the run, no descriptor, no mapping of a shared-memory segment and
no thread of the pool is left. Every wait has a deadline (``WAIT``); one that passes reports
what the pool and every thread were doing. The model (outcomes, the *taints* a fault may leave
on its worker) is in ``campaign.py``, the steps in ``campaign_steps.py``, the jobs in
``campaign_jobs.py`` (with ``hostile.py`` and ``jobs.py``).

Duration: by default (CI) a short, fixed number of examples per backend, reproducible (fixed seed,
no example database). ``JOBPOOL_CAMPAIGN_SECONDS=600`` runs each backend for that long instead,
from a random seed (``JOBPOOL_CAMPAIGN_SEED`` fixes it), and prints its figures at the end: jobs
run, faults of each kind, worker restarts, failures. A failing run prints its seed.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import sys
import threading
import time
import traceback

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import campaign_jobs as cj
import jobs
from campaign import (
    ENDINGS,
    KILLED_OR_CANCELLED,
    THRESHOLD,
    Expect,
    Figures,
    Run,
    Scenario,
    Step,
    Tracked,
    all_steps,
    cancelled,
    diagnosis,
    outcome_of,
    run_later,
    value,
    wait_for,
)
from campaign_steps import STEPS, TAINTS, faults_for
from conftest import START_METHODS, WAIT, pool_kwargs
from jobpool import Pool, per_worker

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="counts processes and descriptors in /proc"
)

SECONDS = float(os.environ.get("JOBPOOL_CAMPAIGN_SECONDS", "0") or 0)
LONG = SECONDS > 0
# Examples per backend in the short form (CI): about 60-90 s for all four on two busy cores.
SHORT_EXAMPLES = {"thread": 25, "process-fork": 15, "process-forkserver": 15, "process-spawn": 5}
ROUND_EXAMPLES = 40  # long form: examples per hypothesis run, between looks at the clock
DEFAULT_SEED = 20230023
CAMPAIGN_BACKENDS = ["thread", *(f"process-{m}" for m in ("fork", "forkserver", "spawn"))]
CAMPAIGN_BACKENDS = [b for b in CAMPAIGN_BACKENDS if b == "thread" or b[8:] in START_METHODS]


# --- running one scenario ---------------------------------------------------------------------


class Baseline:
    """What the test process holds before a scenario: the scenario must leave exactly that."""

    def __init__(self) -> None:
        from proctree import descendants

        self.fds = open_descriptors()
        self.threads = set(threading.enumerate())
        self.processes = descendants(os.getpid())


def open_descriptors() -> dict[int, str]:
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the one listdir used, closed by now
            pass
    return found


def shared_mappings() -> list[str]:
    """The shared-memory segments this process still maps: jobpool's (memfd, which live only
    while a descriptor or a mapping holds them) and any from /dev/shm.

    A listing of /dev/shm itself says nothing here: other programs on the machine write there,
    and jobpool never does (its segments have no name)."""
    with open("/proc/self/maps") as maps:
        return [line.strip() for line in maps if "memfd:jobpool" in line or "/dev/shm/" in line]


class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def run_scenario(backend: str, scenario: Scenario, figures: Figures) -> None:
    import tempfile

    from proctree import descendants, wait_exited

    gc.collect()
    before = Baseline()
    directory = tempfile.mkdtemp(prefix="jpcampaign")
    errors = ErrorRecords()
    logging.getLogger("jobpool").addHandler(errors)
    taints = {t for item in all_steps(scenario) for t in TAINTS.get(item.fault, ())}
    run = Run(backend, scenario, directory, taints)
    ok = False
    try:
        _run_threads(run)
        _end(run)
        _check_futures(run)
        stats = run.pool.stats()
        if not (stats.pending == stats.running == stats.workers == 0):
            run.problem(f"after shutdown: {stats}")
        if stats.submitted != stats.done + stats.failed + stats.cancelled:
            run.problem(f"stats do not add up: {stats}")
        figures.restarts += stats.worker_restarts
        ok = True
    finally:
        if not ok:  # stop everything without waiting, so the failure is what gets reported
            run.pool.terminate()
            run.pool.shutdown(wait=False)
        run.tether.close()  # lets go of every process and thread that waits there
    left_behind = {int(name[4:]) for name in os.listdir(directory) if name.startswith("pid-")}
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
    # --- nothing is left behind ---------------------------------------------------------------
    new_processes = (descendants(os.getpid()) - before.processes) | left_behind
    still = wait_exited(new_processes, WAIT)
    if still:
        run.problem(f"processes still running after shutdown: {sorted(still)}")
    deadline = time.monotonic() + WAIT
    while True:
        threads = [t for t in threading.enumerate() if t not in before.threads and t.is_alive()]
        if not threads or time.monotonic() > deadline:
            break
        threads[0].join(max(0.0, deadline - time.monotonic()))
    if threads:
        run.problem(f"threads left: {[t.name for t in threads]}")
    tracked, run.tracked = run.tracked, []
    del tracked
    gc.collect()
    fds = open_descriptors()
    extra = {fd: link for fd, link in fds.items() if before.fds.get(fd) != link}
    if extra:
        run.problem(f"descriptors left open: {extra}")
    segments = shared_mappings()
    if segments:
        run.problem(f"shared memory still mapped: {segments}")
    logging.getLogger("jobpool").removeHandler(errors)
    for record in errors.records:  # a dispatcher that died, a tree that could not be stopped
        run.problem(f"the pool logged an error: {record.getMessage()}")
    with run.lock:
        figures.examples += 1
        figures.jobs += run.figures.jobs
        figures.map_items += run.figures.map_items
        figures.faults.update(s.fault for steps in scenario.threads for s in steps)
        figures.endings[scenario.ending] += 1
    assert not run.problems, "\n".join(run.problems)


def _run_threads(run: Run) -> None:
    barrier = threading.Barrier(len(run.scenario.threads))

    def submitter(steps: tuple[Step, ...]) -> None:
        mine: list[Tracked] = []
        try:
            barrier.wait(WAIT)
            for item in steps:
                STEPS[item.fault](run, item.n, mine)
                run_later.run()
        except RuntimeError as exc:  # submit after a shutdown from another thread
            if not (run.shut.is_set() and "shutdown" in str(exc)):
                run.problem(f"submitting thread: {traceback.format_exc()}")
        except BaseException:
            run.problem(f"submitting thread: {traceback.format_exc()}")
        finally:
            try:
                run_later.run()
            except BaseException:
                run.problem(f"releasing a held job: {traceback.format_exc()}")
            run.going.set()

    threads = [
        threading.Thread(target=submitter, args=(steps,), name=f"campaign-submitter-{i}")
        for i, steps in enumerate(run.scenario.threads)
    ]
    for thread in threads:
        thread.start()
    if run.scenario.ending == "shutdown-while-submitting":
        # Once a first job was accepted, from this thread, while the others go on.
        if not run.going.wait(WAIT):
            raise AssertionError(f"no job was accepted within {WAIT} s")
        run.shut.set()  # from now on every job accepted may be cancelled (see track)
        _allow_for_ending(run, [cancelled])
        run.pool.shutdown(wait=False, cancel_futures=True)
    for thread in threads:
        thread.join(WAIT)
        if thread.is_alive():
            run.problem(f"{thread.name} did not end within {WAIT} s{diagnosis(run)}")
            raise AssertionError("\n".join(run.problems))


def _allow_for_ending(run: Run, outcomes: list[Expect]) -> None:
    """The futures not done yet may end as the caller's ending makes them end."""
    with run.lock:
        for tracked in run.tracked:
            if not tracked.future.done():
                tracked.expect.extend(outcomes)


def _end(run: Run) -> None:
    pool, ending = run.pool, run.scenario.ending
    if ending != "shutdown-while-submitting":
        # The pool still answers after everything the threads did.
        fresh = run.track(pool.submit(jobs.square, 12), "fresh job", value(144))
        wait_for(fresh, run)
    if ending == "shutdown-cancel":
        _allow_for_ending(run, [cancelled])
        pool.shutdown(wait=False, cancel_futures=True)
    elif ending == "terminate":
        _allow_for_ending(run, KILLED_OR_CANCELLED)
        pool.terminate()
    # Every job that waits at the tether is resolved by now (released, killed) or has a time
    # limit: shutdown returns before the tether lets the rest go (children and threads left).
    closer = threading.Thread(target=pool.shutdown, name="campaign-shutdown", daemon=True)
    closer.start()
    closer.join(WAIT)
    if closer.is_alive():
        raise AssertionError(f"shutdown() did not return within {WAIT} s{diagnosis(run)}")
    run.tether.close()
    if ending == "shutdown-while-submitting":
        try:
            pool.submit(jobs.square, 1)
        except RuntimeError:
            pass
        else:
            run.problem("submit() after shutdown did not raise")


def _check_futures(run: Run) -> None:
    with run.resolved:
        all_called = run.resolved.wait_for(lambda: all(t.calls for t in run.tracked), timeout=WAIT)
    if not all_called:
        never = [t.fault for t in run.tracked if not t.calls]
        run.problem(f"{len(never)} futures never resolved: {never}{diagnosis(run)}")
    for tracked in run.tracked:
        if tracked.calls > 1:
            run.problem(f"{tracked.fault}: resolved {tracked.calls} times")
        if not tracked.future.done():
            continue
        verdicts = [expect(tracked.future) for expect in tracked.expect]
        if all(v is not None for v in verdicts):
            run.problem(f"{tracked.fault}: {outcome_of(tracked.future)}; {verdicts}")


# --- the campaign ------------------------------------------------------------------------------


def scenarios(backend: str) -> st.SearchStrategy[Scenario]:
    process = backend != "thread"
    steps = st.builds(Step, st.sampled_from(faults_for(backend)), st.integers(0, 7))
    return st.builds(
        Scenario,
        workers=st.integers(1, 3),
        max_pending=st.one_of(st.none(), st.integers(2, 6)),
        max_jobs_per_worker=st.sampled_from([None, 3, 1]) if process else st.none(),
        initializer=st.booleans(),
        threads=st.lists(
            st.lists(steps, min_size=1, max_size=6).map(tuple), min_size=1, max_size=4
        ).map(tuple),
        ending=st.sampled_from(ENDINGS),
    )


def _warm_up(backend: str) -> None:
    """Start what lives for the whole process once (the stdlib's fork server, its resource
    tracker, imports), so that a scenario's baseline already holds it."""
    import numpy  # noqa: F401

    with Pool(1, **pool_kwargs(backend), shared_memory_threshold=THRESHOLD) as pool:
        pool.submit(cj.reverse_bytes, b"x" * (THRESHOLD + 1)).result(timeout=WAIT)
        pool.submit(per_worker(cj.Offset, 1).add, 1).result(timeout=WAIT)


# The long form runs for as long as asked; the short one within the suite's usual limit.
@pytest.mark.timeout(SECONDS + 600 if LONG else 180)
@pytest.mark.parametrize("backend", CAMPAIGN_BACKENDS)
def test_fault_campaign(backend: str) -> None:
    logging.getLogger("jobpool_campaign").propagate = False  # the chatter of left threads
    logging.getLogger("jobpool_campaign").addHandler(logging.NullHandler())
    _warm_up(backend)
    figures = Figures()
    started = time.monotonic()
    base_seed = int(os.environ.get("JOBPOOL_CAMPAIGN_SEED", "0") or 0) or (
        random.randrange(1 << 32) if LONG else DEFAULT_SEED
    )
    rounds = 0
    try:
        while True:
            round_seed = base_seed + rounds
            examples = ROUND_EXAMPLES if LONG else SHORT_EXAMPLES[backend]

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.generate],  # shrinking a scenario that hangs costs a deadline a step
                report_multiple_bugs=False,
                print_blob=True,
            )
            @seed(round_seed)
            @given(scenario=scenarios(backend))
            def campaign(scenario: Scenario) -> None:
                if LONG and time.monotonic() - started > SECONDS:
                    return  # the time is up: the rest of this round passes at once
                run_scenario(backend, scenario, figures)

            try:
                campaign()
            except BaseException:
                figures.failures += 1
                sys.stderr.write(
                    f"\nfault campaign on {backend} FAILED in round {rounds} (seed {round_seed}); "
                    f"JOBPOOL_CAMPAIGN_SEED={round_seed} draws the same scenarios again\n"
                )
                raise
            rounds += 1
            if not LONG or time.monotonic() - started > SECONDS:
                break
    finally:
        figures.seconds = time.monotonic() - started
        if LONG or figures.failures:  # the short form stays quiet when it passes
            sys.__stdout__.write("\n" + figures.report(backend, base_seed) + "\n")
            sys.__stdout__.flush()
        report = os.environ.get("JOBPOOL_CAMPAIGN_REPORT")
        if report:  # one JSON line per backend, for the reliability page
            with open(report, "a") as out:
                out.write(json.dumps(figures.as_dict(backend, base_seed)) + "\n")
