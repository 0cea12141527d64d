"""A state machine over submit / cancel / kill / crash-a-worker / shutdown.

The invariant: every future resolves exactly once, with an outcome the model allows. Timing
decides some races (a cancel that comes too late, a kill of a job that just returned); the model
then allows each outcome the race can have, and nothing else. *Held* jobs wait at a
``jobs.StartGate`` until the machine releases them, so the machine knows which of them run.

Hypothesis runs derandomized with few, short examples: the same sequences on every run.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
from concurrent.futures import Future
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import jobs
from conftest import WAIT, pool_kwargs
from jobpool import JobKilledError, Pool, WorkerCrashedError
from jobpool._process._state import (
    TRANSITIONS,
    Move,
    WorkerState,
    WorkerStateError,
    check,
    disagreement,
    next_state,
)

WORKERS = 2

# Outcomes a future may end with.
CANCELLED = "cancelled"
KILLED = "killed"
CRASHED = "crashed"
SHUT = "shut"  # cancelled by shutdown(cancel_futures=True) before it started


class Tracked:
    def __init__(self, future: Future[Any], value: Any, held: Optional[str]) -> None:
        self.future = future
        self.value = value  # the result when nothing interferes
        self.held = held  # gate tag of a held job, None for a quick one
        self.allowed: set[str] = {"value"}
        self.resolutions = 0
        self._lock = threading.Lock()
        future.add_done_callback(self._resolved)

    def _resolved(self, _: Future[Any]) -> None:
        with self._lock:
            self.resolutions += 1

    def outcome(self) -> str:
        f = self.future
        if f.cancelled():
            return CANCELLED
        exc = f.exception(timeout=0)
        if exc is None:
            return "value" if f.result() == self.value else f"wrong value {f.result()!r}"
        if isinstance(exc, JobKilledError):
            return KILLED
        if isinstance(exc, WorkerCrashedError):
            return CRASHED
        return f"unexpected {exc!r}"

    def check(self) -> None:
        assert self.resolutions <= 1
        if self.future.done():
            outcome = self.outcome()
            allowed = self.allowed | ({CANCELLED} if SHUT in self.allowed else set())
            assert outcome in allowed, (outcome, self.allowed)


class PoolMachine(RuleBasedStateMachine):
    backend = "thread"

    def __init__(self) -> None:
        super().__init__()
        self.gate = jobs.StartGate()
        self.pool = Pool(WORKERS, **pool_kwargs(self.backend))
        self.tracked: list[Tracked] = []
        self.old_pools: list[Pool] = []
        self.next_tag = 0

    # --- rules ----------------------------------------------------------------------------------

    @rule(x=st.integers(-50, 50))
    def submit_quick(self, x: int) -> None:
        self.tracked.append(Tracked(self.pool.submit(jobs.square, x), x * x, None))

    @precondition(lambda self: len(self.unreleased()) < WORKERS)
    @rule()
    def submit_held(self) -> None:
        tag = f"h{self.next_tag}"
        self.next_tag += 1
        future = self.pool.submit(jobs.gate_job, self.gate.address, tag, tag)
        self.tracked.append(Tracked(future, tag, tag))

    @precondition(lambda self: self.unreleased())
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        tracked = data.draw(st.sampled_from(self.unreleased()))
        self.gate.release(tracked.held)
        tracked.held = None

    @precondition(lambda self: self.tracked)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        tracked = data.draw(st.sampled_from(self.tracked))
        if tracked.future.cancel():
            tracked.allowed = {CANCELLED}

    @precondition(lambda self: self.tracked)
    @rule(data=st.data())
    def kill(self, data: st.DataObject) -> None:
        tracked = data.draw(st.sampled_from(self.tracked))
        # A held job that has started and is not resolved yet cannot finish by itself.
        reachable = (
            tracked.held is not None
            and tracked.held in self.gate.collect()
            and not tracked.future.done()
        )
        if self.pool.kill(tracked.future):
            tracked.allowed = {CANCELLED} if tracked.future.cancelled() else {KILLED}
        else:
            # Only a job that had already finished can be out of reach of kill().
            assert not reachable
            assert tracked.future.done()

    @precondition(lambda self: self.backend != "thread" and self.unreleased())
    @rule(data=st.data())
    def crash_worker(self, data: st.DataObject) -> None:
        """SIGKILL the worker of a held job once it has started.

        The job is drawn from state that only the rules change (never from which jobs happen to
        have started yet), so hypothesis replays the same choices on every run.
        """
        tracked = data.draw(st.sampled_from(self.unreleased()))
        tag = tracked.held
        # Whatever happens below, it leaves the held set the same way on every replay.
        tracked.held = None
        if tracked.future.done():  # cancelled or killed already: nothing to crash
            return
        # Fewer held jobs than workers: a held job that is not done gets a worker and starts.
        pid = self.gate.wait_for(tag, timeout=WAIT)
        os.kill(pid, signal.SIGKILL)
        tracked.allowed = {CRASHED}
        exc = tracked.future.exception(timeout=WAIT)
        assert isinstance(exc, WorkerCrashedError) and exc.signal == "SIGKILL", repr(exc)

    @rule(cancel_futures=st.booleans())
    def shutdown_and_replace(self, cancel_futures: bool) -> None:
        """Shut the pool down (everything resolves), then go on with a fresh pool."""
        if cancel_futures:
            for tracked in self.tracked:
                if not tracked.future.done():
                    tracked.allowed.add(SHUT)
        self.release_all()
        self.pool.shutdown(wait=True, cancel_futures=cancel_futures)
        self.check_all_resolved()
        with pytest.raises(RuntimeError):
            self.pool.submit(jobs.square, 1)
        self.old_pools.append(self.pool)
        self.pool = Pool(WORKERS, **pool_kwargs(self.backend))

    # --- invariants -----------------------------------------------------------------------------

    @invariant()
    def outcomes_are_allowed(self) -> None:
        for tracked in self.tracked:
            tracked.check()

    @invariant()
    def workers_agree_with_their_states(self) -> None:
        """What each worker holds matches its state (process backend; see _process/_state)."""
        if self.backend == "thread":
            return
        dispatcher = self.pool._backend._dispatcher  # type: ignore[attr-defined]
        problems = dispatcher.call(
            lambda: [problem for h in dispatcher.workers.handles for problem in _disagreements(h)]
        )
        assert not problems, problems

    def release_all(self) -> None:
        for tracked in self.unreleased():
            self.gate.release(tracked.held)  # also those that have not reached the gate yet
            tracked.held = None

    def unreleased(self) -> list[Tracked]:
        return [t for t in self.tracked if t.held is not None]

    def check_all_resolved(self) -> None:
        """After shutdown(wait=True): every future is resolved already, none left waiting."""
        not_done = [(t.value, t.allowed, t.future) for t in self.tracked if not t.future.done()]
        assert not not_done, f"shutdown(wait=True) returned, but these never resolved: {not_done}"
        for tracked in self.tracked:
            tracked.check()
            assert tracked.resolutions == 1

    def teardown(self) -> None:
        try:
            self.release_all()
            self.pool.shutdown(wait=True)
            self.check_all_resolved()
            # The pool still answered to the end: the last pool ran every job it was given.
            stats = self.pool.stats()
            assert stats.running == 0 and stats.pending == 0 and stats.workers == 0
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.gate.close()


def _disagreements(handle: Any) -> list[str]:
    """What is wrong with a worker of the pool now: its data against its state, as the state
    module checks it at every move (``_state.disagreement``), and an exited worker left in."""
    problems = []
    lent = handle.lease is not None and handle.lease.active
    wrong = disagreement(handle.state, handle.job is not None, bool(handle.ahead), lent)
    if wrong is not None:
        problems.append(f"{handle!r}: {wrong}")
    if handle.state is WorkerState.EXITED:
        problems.append(f"{handle!r}: exited but still among the workers")
    return problems


# --- the worker state table itself ------------------------------------------------------------

_LIVE = set(WorkerState) - {WorkerState.EXITED}

# The moves of the diagram in ``_state``'s docstring, written out again here: the table must
# allow exactly these, each to this state, and refuse every other move.
DIAGRAM: dict[tuple[WorkerState, Move], WorkerState] = {
    (WorkerState.STARTING, Move.READY): WorkerState.IDLE,
    (WorkerState.STARTING, Move.STOP): WorkerState.RETIRING,
    (WorkerState.IDLE, Move.RUN): WorkerState.BUSY,
    (WorkerState.IDLE, Move.STOP): WorkerState.RETIRING,
    (WorkerState.BUSY, Move.FINISH_LAST): WorkerState.IDLE,
    (WorkerState.BUSY, Move.RUN_AHEAD): WorkerState.BUSY,
    (WorkerState.BUSY, Move.FINISH_NEXT): WorkerState.BUSY,
    (WorkerState.BUSY, Move.LEND): WorkerState.LENT,
    (WorkerState.LENT, Move.UNLEND_BUSY): WorkerState.BUSY,
    (WorkerState.LENT, Move.FINISH_LAST): WorkerState.LENT,
    (WorkerState.LENT, Move.UNLEND_IDLE): WorkerState.IDLE,
    (WorkerState.BUSY, Move.RECALL): WorkerState.RECALLING,
    (WorkerState.RECALLING, Move.GIVE_BACK_BUSY): WorkerState.BUSY,
    (WorkerState.RECALLING, Move.GIVE_BACK_IDLE): WorkerState.IDLE,
    # "finish_next/finish_last also keep RECALLING: a job may end while the recall is on its
    # way; finish_last keeps LENT: the caller read the reply and gives the pipe back next"
    (WorkerState.RECALLING, Move.FINISH_NEXT): WorkerState.RECALLING,
    (WorkerState.RECALLING, Move.FINISH_LAST): WorkerState.RECALLING,
    # a worker stopped or killed while starting may still say READY before it goes
    (WorkerState.RETIRING, Move.READY): WorkerState.RETIRING,
    (WorkerState.KILLED, Move.READY): WorkerState.KILLED,
    # "any state but EXITED --kill--> KILLED; any state --exit--> EXITED" (none leaves EXITED)
    **{(state, Move.KILL): WorkerState.KILLED for state in _LIVE},
    **{(state, Move.EXIT): WorkerState.EXITED for state in _LIVE},
}


def test_the_table_allows_exactly_the_moves_of_the_diagram() -> None:
    for state in WorkerState:
        for move in Move:
            if (state, move) in DIAGRAM:
                assert next_state(state, move) is DIAGRAM[state, move], (state, move)
            else:
                with pytest.raises(WorkerStateError, match=state.value):
                    next_state(state, move)
    assert TRANSITIONS == DIAGRAM


def test_a_walk_from_starting_takes_every_move_of_the_diagram() -> None:
    """For each move of the diagram: reach its state from STARTING by the diagram's shortest
    path, then make it; ``next_state`` must agree at every step, and every move is made."""
    taken: set[tuple[WorkerState, Move]] = set()
    for (source, move), target in sorted(DIAGRAM.items(), key=lambda kv: str(kv[0])):
        state = WorkerState.STARTING
        for step in [*_path(WorkerState.STARTING, source), move]:
            taken.add((state, step))
            before, state = state, next_state(state, step)
            assert state is DIAGRAM[before, step], (before, step)
        assert state is target, (source, move)
    assert taken == set(DIAGRAM), "moves no walk made"


def _path(start: WorkerState, goal: WorkerState) -> list[Move]:
    """The shortest list of the diagram's moves that takes a worker from ``start`` to ``goal``."""
    paths: dict[WorkerState, list[Move]] = {start: []}
    todo = [start]
    while todo:
        state = todo.pop(0)
        for (source, move), target in DIAGRAM.items():
            if source is state and target not in paths:
                paths[target] = [*paths[state], move]
                todo.append(target)
    assert goal in paths, f"the diagram has no way from {start.value} to {goal.value}"
    return paths[goal]


class StateTableMachine(RuleBasedStateMachine):
    """Random moves from a random state against ``_state.next_state``: a move the diagram allows
    goes where the diagram says, any other raises and leaves the worker as it was."""

    def __init__(self) -> None:
        super().__init__()
        self.state = WorkerState.STARTING

    @initialize(state=st.sampled_from(list(WorkerState)))
    def start(self, state: WorkerState) -> None:
        self.state = state

    @rule(data=st.data())
    def allowed(self, data: st.DataObject) -> None:
        moves = sorted((m for (s, m) in DIAGRAM if s is self.state), key=lambda m: m.value)
        if not moves:  # EXITED: nothing is allowed
            return
        move = data.draw(st.sampled_from(moves))
        before = self.state
        self.state = next_state(before, move)
        assert self.state is DIAGRAM[before, move]

    @rule(move=st.sampled_from(list(Move)))
    def any_move(self, move: Move) -> None:
        expected = DIAGRAM.get((self.state, move))
        if expected is None:
            with pytest.raises(WorkerStateError, match=self.state.value):
                next_state(self.state, move)
        else:
            self.state = next_state(self.state, move)
            assert self.state is expected

    @invariant()
    def kill_and_exit_stay_possible(self) -> None:
        if self.state is WorkerState.EXITED:
            assert all((self.state, move) not in TRANSITIONS for move in Move)
        else:
            assert TRANSITIONS[self.state, Move.EXIT] is WorkerState.EXITED
            assert TRANSITIONS[self.state, Move.KILL] is WorkerState.KILLED


def _reachable(start: WorkerState) -> set[WorkerState]:
    reachable, todo = {start}, [start]
    while todo:
        state = todo.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in reachable:
                reachable.add(target)
                todo.append(target)
    return reachable


def test_every_state_but_exited_is_reachable_and_can_end() -> None:
    assert _reachable(WorkerState.STARTING) == set(WorkerState)
    for state in WorkerState:
        assert WorkerState.EXITED in _reachable(state), f"a worker in {state.value} cannot end"
        if state is WorkerState.EXITED:
            assert not [move for move in Move if (state, move) in TRANSITIONS], "left EXITED"
        else:
            assert TRANSITIONS[state, Move.KILL] is WorkerState.KILLED, state
            assert TRANSITIONS[state, Move.EXIT] is WorkerState.EXITED, state


TestStateTable = settings(max_examples=50, stateful_step_count=30, derandomize=True, database=None)(
    StateTableMachine
).TestCase


# JOBPOOL_STATEFUL_EXAMPLES=200 explores further (slower); the default keeps the suite fast.
SETTINGS = settings(
    max_examples=int(os.environ.get("JOBPOOL_STATEFUL_EXAMPLES", 12)),
    stateful_step_count=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@SETTINGS
class ThreadMachine(PoolMachine):
    backend = "thread"


@SETTINGS
class ForkserverMachine(PoolMachine):
    backend = "process-forkserver"


@SETTINGS
class ForkMachine(PoolMachine):
    backend = "process-fork"


TestThreadPool = ThreadMachine.TestCase
TestForkserverPool = ForkserverMachine.TestCase
TestForkPool = ForkMachine.TestCase


def _agrees(state: WorkerState, job: bool, ahead: bool, lent: bool) -> bool:
    """The rules of ``_state``, written out again: what a worker in each state may hold."""
    if state in (WorkerState.STARTING, WorkerState.IDLE, WorkerState.RETIRING):
        return not (job or ahead or lent)  # nothing
    if state is WorkerState.BUSY:
        return job and not lent  # a job, maybe some behind it, its own pipe
    if state is WorkerState.LENT:
        return lent and not ahead  # its pipe with a caller, nothing behind its job
    if state is WorkerState.RECALLING:
        return not lent
    return True  # KILLED, EXITED: whatever they held until their exit hands it back


def test_the_rules_tie_each_state_to_its_data() -> None:
    """``_state.check``, which every move of a worker runs, refuses exactly the data its state
    does not allow, and says what is wrong."""
    flags = (False, True)
    for state in WorkerState:
        for job, ahead, lent in itertools.product(flags, flags, flags):
            wrong = disagreement(state, job, ahead, lent)
            if _agrees(state, job, ahead, lent):
                assert wrong is None, (state, job, ahead, lent)
                check(state, job, ahead, lent)
            else:
                assert wrong is not None and state.value in wrong, (state, job, ahead, lent)
                with pytest.raises(WorkerStateError, match=state.value):
                    check(state, job, ahead, lent)
