"""Workers: the set of worker processes, from start to exit, and the pool's lifecycle flags.

It starts workers as the waiting jobs need them (see :meth:`Workers.grow`), replaces the ones
that crash, time out, are killed or recycled, stops them when the pool closes, and breaks the
pool when they cannot start.
A start that fails for want of descriptors, processes or memory is tried again later, with
backoff (``_start_later``), while the other workers serve.
When a worker exits it fails only the job that worker ran and puts the jobs waiting behind it
first in line. It never calls the loop above it (``_dispatcher``): the loop asks it.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import textwrap
import time
from concurrent.futures import Future
from multiprocessing.context import BaseContext
from typing import Any, Callable, Optional

from .._errors import (
    BROKEN,
    InitializerError,
    JobKilledError,
    JobTimeoutError,
    MemoryLimitError,
    WorkerCrashedError,
    describe_exit,
)
from .._job import Job, Outcomes
from ._cpu_demand import SAMPLE_SECONDS, cpus_taken
from ._cpu_limit import cpus_allowed
from ._handle import WorkerHandle
from ._large_data import LargeData
from ._line import JobLine
from ._memory import ProcessListing
from ._send_ahead import KILLED_WAITING
from ._start import WorkerSetup
from ._state import HOLDS_JOB, LEAVING, WorkerState, due_for_recycling
from ._watch import FdWatch

# A worker that dies before it is ready this many times in a row breaks the pool.
MAX_START_FAILURES = 3
# A worker that could not be started for want of descriptors, processes or memory is started
# again after this long, doubling up to the most; when jobs wait and no worker could be started
# for START_RETRY_SECONDS, the pool breaks (they could never run).
RETRY_FIRST_SECONDS = 0.05
RETRY_MOST_SECONDS = 2.0
START_RETRY_SECONDS = 30.0
# What starting a process fails with when the system is short of something that comes back:
# descriptors (EMFILE, ENFILE), processes (EAGAIN), memory (ENOMEM).
_SHORT_OF = (errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM)
TERMINATED = "the pool was terminated"
# Why the job a worker had started after the one it was killed for fails with it.
STARTED_AFTER = (
    "the pool had killed it for the job before this one (its time limit, memory limit or "
    "Pool.kill()), which ended as the kill was under way, and this one had started"
)
# At most this many workers are starting (not READY yet) at once while the pool grows: starting
# more would share the same cores and delay the first of them, which the waiting jobs need now.
STARTING_AT_ONCE = max(2, os.cpu_count() or 1)
# While its loop is awake more than this part of the time (starting workers aside), the parent
# is what limits how fast jobs run: another worker would only share the same cores (see grow).
PARENT_BUSY = 0.5
# A job that has run (or whose worker's jobs take) this many times a worker's start is a long
# one: once the CPUs are taken, only long jobs start more workers, so that a short job queued
# behind them gets a worker of its own (see grow).
LONG_JOB_STARTS = 1.0

_log = logging.getLogger("jobpool")

# What the dispatcher's sleep reports: (what happened, to which worker), or None for a wake-up.
# MEMORY: the worker's memory cgroup ran out (its job went over its job_memory_limit).
PIPE, EXIT, OUTPUT, MEMORY = "pipe", "exit", "output", "memory"
Event = Optional[tuple[str, WorkerHandle]]


class Workers:
    def __init__(
        self,
        context: BaseContext,
        setup: WorkerSetup,
        size: int,
        max_jobs_per_worker: Optional[int],
        line: JobLine,
        outcomes: Outcomes,
        on_broken: Callable[[BaseException], None],
        watch: FdWatch[Event],
        large: Optional[LargeData] = None,
        max_worker_memory: Optional[int] = None,
    ) -> None:
        self._context = context
        self.max_memory = max_worker_memory  # replace a worker bigger than this after a job
        self._large = large  # large buffers through shared memory, or None (_large_data)
        self._setup = setup
        self.size = size
        self.max_jobs = max_jobs_per_worker
        self._line = line
        self._outcomes = outcomes
        self._on_broken = on_broken
        self._watch = watch
        self._log_level = logging.getLogger().getEffectiveLevel()
        self.handles: list[WorkerHandle] = []
        self._next_index = 0
        self._start_failures = 0
        self.started = False  # workers start with the pool's first job
        # With fork, every worker starts with the first job, while the submitter waits (see
        # ProcessBackend.notify); otherwise the pool grows as jobs wait (see grow).
        self._grows = context.get_start_method() != "fork"
        # Whether a job queued now might start a worker (see grow): a submitter that finds no
        # idle worker wakes the loop then. Written by the loop only.
        self.may_grow = False
        self.start_now = False  # grow wants another start at the next turn: do not sleep
        self.grow_check_at: Optional[float] = None  # when to ask again (see grow)
        self.start_seconds = 0.0  # how long the last workers took to say READY (see grow)
        self.cpus = cpus_allowed()  # the CPUs the pool's workers share (see grow, _lending)
        self.seconds_starting = 0.0  # spent in starting processes, since the loop last asked
        # How many workers are idle: counted again at each turn of the loop, and kept by the
        # methods that make a worker busy or idle outside it, so that a submitter can read it
        # without the lock (see Dispatcher.offer). Nothing else writes it.
        self.idle_count = 0
        self.closing = False  # finish what waits, then stop the workers
        self.terminating = False  # stop now: kill the workers
        self.broken: Optional[BaseException] = None  # workers cannot start: every job fails
        # Workers to start again later: their start failed for want of descriptors (say).
        self.missing = 0
        self.retry_at: Optional[float] = None
        self._retry_seconds = RETRY_FIRST_SECONDS
        self._short_since: Optional[float] = None  # when the current run of such failures began

    def serving(self) -> int:
        """Workers that serve the queue (``PoolStats.workers``): not the ones being stopped."""
        return sum(h.state not in LEAVING for h in list(self.handles))

    # --- which worker is idle, and which runs what ------------------------------------------------

    def count_idle(self) -> None:
        """At each turn of the loop: count the idle workers again."""
        self.idle_count = sum(handle.idle for handle in self.handles)

    def start_on_idle(self, job: Job) -> bool:
        """Send ``job`` to an idle worker, if one is; False if none is."""
        for handle in self.handles:
            if handle.state is WorkerState.IDLE:
                self.start_job(handle, job)
                return True
        return False

    def start_job(self, handle: WorkerHandle, job: Job) -> None:
        """Send ``job`` to the idle worker ``handle``: one idle worker fewer."""
        self.idle_count -= 1
        try:
            handle.run(job)
        except OSError:  # the worker died under us: its exit fails the job
            pass

    def idle_again(self) -> None:
        """A worker became idle outside the loop (its caller gave its pipe back, _lending): a
        submitter may hand it a job before the loop counts again."""
        self.idle_count += 1

    def running(self, future: object) -> Optional[WorkerHandle]:
        """The worker that runs ``future``'s job now, if any."""
        for handle in self.handles:
            if handle.running(future):
                return handle
        return None

    # --- the pool's lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Run what waits, then stop the workers (read by the loop at its next turn)."""
        self.closing = True

    def terminate(self) -> None:
        """Stop now: kill the workers (read by the loop at its next turn)."""
        self.terminating = True
        self.closing = True

    def loop_ended(self) -> None:
        """The dispatcher's loop is over: no worker takes a job from a submitter any more."""
        self.idle_count = 0

    # --- starting ------------------------------------------------------------------------------

    def needs_first_workers(self) -> bool:
        """Whether to start the workers now: a job waits for the first time. An unused pool
        (one made when a module is imported, in a worker too) starts no processes."""
        return (
            not self.started
            and self._line.waiting()
            and not self.terminating
            and self.broken is None
        )

    def start_first(self) -> None:
        self.started = True
        if self._grows:
            self.grow()
            return
        for _ in range(self.size):
            if self.broken is None:
                self._start()

    def grow(self, parent_busy: float = 0.0) -> None:
        """Start a worker if waiting jobs need one, at each turn of the loop (which does not
        sleep while ``start_now``): the pool grows to its size only as fast as jobs wait for
        workers, one start at a time between the loop's other work, so dispatching never waits
        for all of them to start.

        Jobs need a worker when more wait than the idle and starting workers will take, fewer
        than ``STARTING_AT_ONCE`` are starting, and the workers there would not finish them
        before a new one could start: by their recent job times, the waiting jobs would keep
        them busy longer than the last workers took to say READY; and, once jobs have replied,
        the parent keeps up (its loop was awake less than ``PARENT_BUSY`` of the time, as the
        dispatcher measures it in ``parent_busy``): jobs of microseconds are limited by the
        parent, and one more process would only take its CPU; and the CPUs are not all taken
        already: once the workers holding or starting jobs are as many as the CPUs, jobs
        shorter than a start start another only if those workers leave CPU time unused (their
        jobs wait on I/O: ``_cpu_demand``). Jobs as long as a start or longer are not held
        back so (a short job queued behind them gets a worker of its own, as in the stdlib's
        pool of that size). Otherwise the question is asked again after that long
        (``grow_check_at``), when a long job will have shown that it is one. So
        ``Pool(workers=50)`` with three jobs starts three processes, 300 jobs of a hundred
        microseconds start about one a CPU, and ``stats().workers`` counts them.
        """
        self.start_now = False
        self.grow_check_at = None
        if self._may_start():
            waiting = self._line.count() - self.idle_count
            starting = 0
            holding: list[WorkerHandle] = []
            now = time.monotonic()
            for handle in self.handles:
                state = handle.state
                if state is WorkerState.STARTING:
                    starting += 1
                elif state in HOLDS_JOB:
                    holding.append(handle)
            busy = len(holding)
            if waiting > starting and starting < STARTING_AT_ONCE:
                unserved = waiting - starting
                times = [(h.job_seconds, now - h.started_at) for h in holding]
                per_job = longest_job(times)
                drain = seconds_to_serve(unserved, times)
                long_job = LONG_JOB_STARTS * self.start_seconds
                if drain < self.start_seconds or (busy and parent_busy >= PARENT_BUSY):
                    # ask again when a job running from now on would have made it worth it
                    wait = self.start_seconds * busy / unserved if busy else self.start_seconds
                    self.grow_check_at = now + min(self.start_seconds, wait)
                elif (not busy or per_job < long_job) and cpus_taken(
                    [handle.cpu.share(now) for handle in holding], starting, self.cpus
                ):
                    # ask again when their shares are read again, or a running job is a long one
                    left = long_job - per_job if busy else SAMPLE_SECONDS
                    self.grow_check_at = now + min(SAMPLE_SECONDS, left)
                else:
                    self._start()
                    self.start_now = starting + 1 < STARTING_AT_ONCE and unserved > 1
        self.may_grow = (
            self._grows
            and self.started
            and len(self.handles) + self.missing < self.size
            and not self.closing
        )

    def _may_start(self) -> bool:
        """Whether the pool may grow now at all (see grow)."""
        return (
            self._grows
            and self.started
            and len(self.handles) + self.missing < self.size
            and not self.terminating
            and self.broken is None
            and self.retry_at is None
            and self._line.count() > self.idle_count
        )

    def _start(self) -> None:
        began = time.monotonic()
        try:
            self._start_one()
        finally:
            self.seconds_starting += time.monotonic() - began

    def took_starting(self) -> float:
        """The seconds spent starting processes since the last call (see Dispatcher)."""
        seconds, self.seconds_starting = self.seconds_starting, 0.0
        return seconds

    def _start_one(self) -> None:
        try:
            handle = WorkerHandle(
                self._context, self._next_index, self._setup, self._log_level, self._large
            )
        except Exception as exc:
            if _short_of_resources(exc):
                self._start_later(exc)
                return
            # e.g. an initarg that cannot be pickled for a new process: no retry will help
            error = InitializerError(
                f"could not start a worker process: {type(exc).__name__}: {exc}; {BROKEN}"
            )
            error.__cause__ = exc
            self.break_pool(error)
            return
        if self.missing == 0:
            self._retry_seconds = RETRY_FIRST_SECONDS
            self._short_since = None
        self._next_index += 1
        self.handles.append(handle)
        self._watch.add(handle.fd, (PIPE, handle))
        self._watch.add(handle.exit_fd, (EXIT, handle))
        self._watch.add(handle.startup_output.fd, (OUTPUT, handle))
        handle.watch_memory(lambda fd: self._watch.add(fd, (MEMORY, handle)))

    def _start_later(self, exc: Exception) -> None:
        """A worker could not start for want of descriptors, processes or memory (or the
        stdlib's fork server went away for that reason, to be started again): try again later,
        with the other workers serving meanwhile. Breaks the pool only when jobs wait and no
        worker could be started for ``START_RETRY_SECONDS``: they could never run."""
        now = time.monotonic()
        self.missing += 1
        if self._short_since is None:
            self._short_since = now
            _log.warning(
                "jobpool could not start a worker process (%s: %s); it tries again later",
                type(exc).__name__,
                exc,
            )
        if (
            self.serving() == 0
            and self._line.waiting()
            and now - self._short_since >= START_RETRY_SECONDS
        ):
            error = InitializerError(
                f"could not start a worker process: {type(exc).__name__}: {exc}; no worker "
                f"could start for {START_RETRY_SECONDS:g} s, so {BROKEN}"
            )
            error.__cause__ = exc
            self.break_pool(error)
            return
        if self.retry_at is None:
            self.retry_at = now + self._retry_seconds
            self._retry_seconds = min(2 * self._retry_seconds, RETRY_MOST_SECONDS)

    def retrying(self) -> bool:
        """Whether workers wait to be started again (the loop must not end before)."""
        return self.retry_at is not None and not self.terminating

    def retry_starts(self, now: float) -> None:
        """Start again the workers whose start failed (see ``_start_later``), once due."""
        if self.retry_at is None or self.retry_at > now:
            return
        self.retry_at = None
        missing, self.missing = self.missing, 0
        if self.terminating or self.broken is not None:
            return
        if self.closing and not self._line.waiting():
            return  # nothing left for them to run
        for _ in range(missing):
            if self.broken is None:
                self._start()

    def _replace(self) -> None:
        """Start a worker in the place of one that left, if one is needed.

        Closing (``shutdown``) still runs every waiting job, so a worker recycled or crashed
        while jobs wait is replaced; otherwise those jobs would never resolve.
        """
        if self.terminating or self.broken is not None:
            return
        if not self.closing or self._line.waiting():
            self._outcomes.count("worker_restarts")
            self._start()

    def _replace_soon(self) -> None:
        """``_replace``, by the loop at its next turn (see ``retry_starts``)."""
        if self.terminating or self.broken is not None:
            return
        if not self.closing or self._line.waiting():
            self._outcomes.count("worker_restarts")
            self.missing += 1
            if self.retry_at is None:
                self.retry_at = time.monotonic()

    def on_output(self, handle: WorkerHandle) -> None:
        """A starting worker wrote to stderr (or, at end of file, is done starting)."""
        output = handle.startup_output
        if not output.read():
            self._watch.remove(output.fd, (OUTPUT, handle))
            output.close()

    def on_ready(self, handle: WorkerHandle) -> None:
        self._start_failures = 0
        self.start_seconds = handle.start_seconds

    # --- exits ----------------------------------------------------------------------------------

    def worker_exited(self, handle: WorkerHandle) -> None:
        """A worker process ended (its last words already read): fail only the job it held,
        put the ones waiting behind it first in line, and replace it if needed."""
        self._watch.remove(handle.fd, (PIPE, handle))
        self._watch.remove(handle.exit_fd, (EXIT, handle))
        memory_fd = handle.memory_fd
        if memory_fd is not None:
            self._watch.remove(memory_fd, (MEMORY, handle))
        if not handle.startup_output.closed:
            handle.startup_output.drain()
            self._watch.remove(handle.startup_output.fd, (OUTPUT, handle))
        self.handles.remove(handle)
        exitcode = handle.reap()
        job, unstarted = handle.release_jobs()
        self._requeue_unstarted(handle, exitcode, unstarted)
        if handle.exited_from is WorkerState.STARTING:
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                self.break_pool(self._start_failure(handle, exitcode))
                return
        if handle.exited_from is not WorkerState.RETIRING:  # not a planned exit (recycled)
            self._replace()
        if job is not None:  # failed last: by then its replacement has started
            error = handle.failure or handle.limit_error or self._crash(handle, exitcode)
            self._outcomes.fail(
                job,
                error,
                timed_out=isinstance(error, JobTimeoutError),
                over_memory=isinstance(error, MemoryLimitError),
            )

    @staticmethod
    def _crash(handle: WorkerHandle, exitcode: Optional[int]) -> WorkerCrashedError:
        """The error for the job of a worker that died, or that we killed for what it sent."""
        if handle.unreachable is not None:
            return WorkerCrashedError(
                handle.pid,
                exitcode,
                f"the pool could not send it a job ({handle.unreachable}), so it killed it "
                "and started another",
            )
        if handle.protocol_breach is None:
            return WorkerCrashedError(handle.pid, exitcode, handle.oom_note or "")
        return WorkerCrashedError(
            handle.pid,
            exitcode,
            f"it had sent {handle.protocol_breach}, which breaks the protocol between the pool "
            "and its workers, so the pool killed it and started another",
        )

    def _start_failure(self, handle: WorkerHandle, exitcode: Optional[int]) -> InitializerError:
        """The error for workers that keep dying before they are ready, in their own words."""
        tail = handle.startup_output.tail()
        said = (
            "The last lines it wrote to stderr:\n" + textwrap.indent(tail, "    ")
            if tail
            else "It wrote nothing to stderr after it started."
        )
        return InitializerError(
            f"worker process {handle.pid} {describe_exit(exitcode)} while starting, before it "
            f"could report; {self._start_failures} workers in a row did so, and {BROKEN}. " + said
        )

    def _requeue_unstarted(
        self, handle: WorkerHandle, exitcode: Optional[int], jobs: list[Job]
    ) -> None:
        """The jobs a gone worker held but had not started run elsewhere, first in line.

        The pool terminating (or broken) fails them all alike, the one the worker had started
        after the job it was killed for included: that one was a termination's, not a crash's
        (the fault campaign saw a ``terminate()`` fail it as ``WorkerCrashedError``)."""
        if self.terminating or self.broken is not None:
            for job in jobs:
                if not job.future.resolved:
                    self._outcomes.fail(job, self.broken or JobKilledError(TERMINATED))
            return
        if jobs and handle.replied_after_kill:
            # It replied to the job we killed it for, so it had started the next one.
            self._outcomes.fail(
                jobs.pop(0), WorkerCrashedError(handle.pid, exitcode, STARTED_AFTER)
            )
        jobs = [job for job in jobs if not job.future.resolved]  # not those Pool.kill() failed
        if jobs:
            self._line.put_first(jobs)

    # --- recycling, stopping, breaking ------------------------------------------------------------

    def recycle_if_due(self, handle: WorkerHandle, in_loop: bool = True) -> bool:
        """After a reply (or a give-back, or a caller gave its pipe back): replace a worker that
        has run ``max_jobs_per_worker`` jobs, or whose own memory is over ``max_worker_memory``
        (it takes no job from then on). True if it was told to stop.

        Outside the loop (``in_loop=False``: a caller thread) the replacement is started by the
        loop at its next turn: starting processes is the dispatcher's job.
        """
        if self.max_jobs is not None and due_for_recycling(
            handle.state, handle.jobs_done, self.max_jobs
        ):
            handle.stop()
            self._replace()  # counted as a restart only when replaced, as for a crash
            return True
        if self.max_memory is None or not handle.check_size(self.max_memory):
            return False
        if handle.state is WorkerState.IDLE:
            handle.stop()
            self._outcomes.count("recycled_for_memory")
            if in_loop:
                self._replace()
            else:
                self._replace_soon()
            return True
        if handle.ahead and handle.state is WorkerState.BUSY:
            handle.recall()  # the jobs waiting behind it run elsewhere; it stops when idle
        return False

    def stop_when_drained(self) -> None:
        """Closing and nothing waits: tell every idle (or still starting) worker to exit."""
        if not self.closing:
            return
        if self._line.waiting() and not self.terminating and self.broken is None:
            return
        for handle in self.handles:
            if handle.may_stop():
                handle.stop()

    def kill_all(self) -> None:
        """Terminate: fail every job that waits behind a worker or was returned, kill them all."""
        self._line.fail_returned(JobKilledError(TERMINATED))
        for handle in self.handles:
            if handle.state is not WorkerState.RETIRING or handle.process.exitcode is None:
                handle.kill(handle.failure or JobKilledError(TERMINATED))

    def break_pool(self, error: BaseException) -> None:
        """The pool cannot run jobs (its workers cannot start): fail everything, stop."""
        if self.broken is not None:
            return
        self.broken = error
        self.closing = True
        self.missing, self.retry_at = 0, None
        self._on_broken(error)
        self._line.fail_all(error)
        for handle in self.handles:
            handle.kill(error if handle.holds_job else None)

    def fail_held(self, error: BaseException) -> None:
        """Fail every job a worker runs or holds behind its running one (the dispatcher gave
        up: nobody would see their replies)."""
        for handle in self.handles:
            job, unstarted = handle.release_jobs()
            for held in ([job] if job is not None else []) + unstarted:
                self._outcomes.fail(held, error)

    # --- time limits, recalls and kills ----------------------------------------------------------

    def seconds_to_next_deadline(self) -> Optional[float]:
        """Until the nearest job deadline, recall (_send_ahead) or start to try again, or None."""
        nearest = self.retry_at
        check = self.grow_check_at
        if check is not None and (nearest is None or check < nearest):
            nearest = check
        for handle in self.handles:
            for deadline in (handle.deadline, handle.recall_at, handle.memory_due_at):
                if deadline is not None and (nearest is None or deadline < nearest):
                    nearest = deadline
        if nearest is None:
            return None
        return max(0.0, nearest - time.monotonic())

    def expire_deadlines(self) -> None:
        now = time.monotonic()
        self.retry_starts(now)
        listing = ProcessListing()  # /proc, read once for every worker sampled now
        for handle in self.handles:
            recall_at = handle.recall_at
            if recall_at is not None and recall_at <= now:
                handle.recall()
            if handle.past_deadline(now):
                assert handle.job is not None and handle.job.timeout is not None
                handle.kill(JobTimeoutError(handle.job.timeout))  # no deadline from now on
            memory_due_at = handle.memory_due_at
            if memory_due_at is not None and memory_due_at <= now:
                handle.sample_memory(now, listing)  # kills it if its job is over its limit

    def out_of_memory(self, handle: WorkerHandle) -> None:
        """``handle``'s memory cgroup ran out: its job went over its limit (killed with it)."""
        if not handle.exited:
            handle.out_of_memory()

    def kill_job(self, future: Future[Any]) -> bool:
        """Pool.kill(): stop ``future``'s job wherever it is, running or waiting behind one."""
        for handle in self.handles:
            if handle.running(future):
                handle.kill(JobKilledError("job killed by Pool.kill(); its worker was replaced"))
                return True
            for job in handle.ahead:
                if job.future is future and not job.future.resolved:
                    # Waiting behind another job: it fails now and is taken back unstarted; if
                    # it starts first, its worker is killed then (WorkerHandle.replied).
                    self._outcomes.fail(job, JobKilledError(KILLED_WAITING))
                    if handle.state is WorkerState.BUSY:
                        handle.recall()
                    return True
        return self._line.kill(future, JobKilledError(KILLED_WAITING))


def longest_job(times: list[tuple[float, float]]) -> float:
    """How long a job takes the slowest of the busy workers, as far as the parent can tell:
    for each, ``(job_seconds, running_for)``: its recent jobs' average (``inf`` before its
    first reply) and how long its running job has run; the longer of the two counts."""
    if not times:
        return 0.0
    return max(
        running_for if job_seconds == math.inf else max(job_seconds, running_for)
        for job_seconds, running_for in times
    )


def seconds_to_serve(unserved: int, times: list[tuple[float, float]]) -> float:
    """How long until the busy workers (``times``: see :func:`longest_job`) could have started
    ``unserved`` more jobs (``inf`` when none is busy); ``grow`` starts a worker when that is
    longer than a start.

    Two bounds, the larger counts. At the rate of the slowest of them, the workers take
    ``unserved * longest / busy`` for all of them (many short jobs). And the last of those jobs
    cannot start before the ``unserved``-th worker to finish is free: a worker whose running
    job has a shorter average than it has run is free in the rest of that average; one
    without an average yet (its first job), or whose job has run longer than its average, is
    taken to be on a job as long as the longest one seen. So fifty jobs of half a second each
    start fifty workers as fast as they can start, rather than only once the running ones
    have run fifty times as long as a start, as the first bound alone would have it.
    """
    busy = len(times)
    if not busy:
        return math.inf
    longest = longest_job(times)
    remaining = sorted(
        job_seconds - running_for
        if job_seconds != math.inf and running_for < job_seconds
        else longest
        for job_seconds, running_for in times
    )
    return max(unserved * longest / busy, remaining[min(unserved, busy) - 1])


def _short_of_resources(exc: BaseException) -> bool:
    """Whether a worker's start failed for want of something that comes back (see _SHORT_OF),
    or because the stdlib's fork server went away meanwhile (it is started again on demand)."""
    if isinstance(exc, OSError) and exc.errno in _SHORT_OF:
        return True
    return isinstance(exc, (ConnectionError, EOFError))
