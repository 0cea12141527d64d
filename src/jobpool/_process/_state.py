"""The states of a worker process as the dispatcher sees it: the moves, the guards and the rules.

After h11's ``_state.py``, everything that decides what a worker may do lives in this one module:

- the table of moves (:data:`TRANSITIONS`): a move that is not in it raises
  :class:`WorkerStateError` at once (a bug in jobpool), instead of leaving a worker in a state
  nobody expects, to hang later;
- which move an event makes (:func:`reply_move`, :func:`recall_answered_move`,
  :func:`pipe_returned_move`): the handle reports what happened, with the data it holds, and
  this module picks the move;
- the guards that say whether a move may be made at all (:func:`may_take_ahead`,
  :func:`may_lend`, :func:`due_for_recycling`, :func:`recall_due_at`...), and which messages a
  worker may send in each state;
- the rules that tie each state to the data the handle keeps (:func:`check`), checked after
  every move: a busy worker has a job, a lent one's pipe is lent, an idle one holds nothing.
  The check is one set lookup (about 0.1 us; two moves per job, four when the caller reads its
  own reply: under 1% of the per-job overhead), so it is always on, in the tests as in use.

It knows nothing of pipes, processes or jobs: the handle (``_handle``) passes it counts, flags
and times. The handle is the only object that changes a worker's state or its data.

    STARTING --ready--> IDLE --run--> BUSY --finish_last--> IDLE
        |                 |            |  \\--run_ahead / finish_next--> BUSY
        |                 |            |--lend--> LENT --unlend_busy--> BUSY
        |                 |            |            \\--unlend_idle--> IDLE
        |                 |            \\--recall--> RECALLING --give_back_busy--> BUSY
        |                 |                            \\--give_back_idle--> IDLE
        \\--stop--> RETIRING <--stop--/
    any state but EXITED --kill--> KILLED;  any state --exit--> EXITED

(``finish_next``/``finish_last`` also keep RECALLING: a job may end while the recall is on its
way; ``finish_last`` keeps LENT: the caller read the reply and gives the pipe back next.)
"""

from __future__ import annotations

import enum
from typing import Callable, Optional

from ._send_ahead import (
    AHEAD_JOBS,
    AHEAD_MARGIN_BYTES,
    AHEAD_SECONDS,
    MAX_AHEAD_BYTES,
    MAX_MORE_AHEAD_BYTES,
    MOST_AHEAD_JOBS,
    ONE_AHEAD_SECONDS,
    RECALL_AFTER_SECONDS,
    SHORT_JOB_SECONDS,
)


class WorkerState(enum.Enum):
    # Members are singletons: hashing by identity is right, and C-fast (a move looks its
    # (state, move) pair up on every job; Enum's own __hash__ is Python code).
    __hash__ = object.__hash__

    STARTING = "starting"  # the process runs; it has not said READY yet
    IDLE = "idle"  # ready, holds no job: the next job may go to it
    BUSY = "busy"  # runs a job; short jobs may wait in its pipe behind it (_send_ahead)
    LENT = "lent"  # a caller thread holds its pipe, to read its job's reply itself (_lending)
    RECALLING = "recalling"  # asked to give back the jobs it has not started; answer pending
    RETIRING = "retiring"  # told to stop (recycled, or the pool closing): its exit is expected
    KILLED = "killed"  # killed on purpose (timeout, Pool.kill, terminate, a broken pool)
    EXITED = "exited"  # the process is gone and reaped


class Move(enum.Enum):
    __hash__ = object.__hash__  # as WorkerState's

    READY = "ready"  # it said READY
    RUN = "run"  # an idle worker was sent a job
    RUN_AHEAD = "run_ahead"  # a busy worker was sent a job to run after the ones it holds
    FINISH_NEXT = "finish_next"  # it replied; the next job sent ahead starts now
    FINISH_LAST = "finish_last"  # it replied; nothing else is waiting for it
    LEND = "lend"  # a caller thread takes its pipe to read its job's reply
    UNLEND_BUSY = "unlend_busy"  # the caller gave the pipe back; the job still runs
    UNLEND_IDLE = "unlend_idle"  # the caller gave the pipe back after its job ended
    RECALL = "recall"  # asked for the jobs it has not started
    GIVE_BACK_BUSY = "give_back_busy"  # it answered the recall; a job still runs
    GIVE_BACK_IDLE = "give_back_idle"  # it answered the recall; it runs nothing
    STOP = "stop"  # told to exit once idle
    KILL = "kill"
    EXIT = "exit"  # its process ended (expected or not) and was reaped


_LIVE = frozenset(WorkerState) - {WorkerState.EXITED}

TRANSITIONS: dict[tuple[WorkerState, Move], WorkerState] = {
    (WorkerState.STARTING, Move.READY): WorkerState.IDLE,
    (WorkerState.STARTING, Move.STOP): WorkerState.RETIRING,
    (WorkerState.IDLE, Move.RUN): WorkerState.BUSY,
    (WorkerState.IDLE, Move.STOP): WorkerState.RETIRING,
    (WorkerState.BUSY, Move.RUN_AHEAD): WorkerState.BUSY,
    (WorkerState.BUSY, Move.FINISH_NEXT): WorkerState.BUSY,
    (WorkerState.BUSY, Move.FINISH_LAST): WorkerState.IDLE,
    (WorkerState.BUSY, Move.LEND): WorkerState.LENT,
    (WorkerState.BUSY, Move.RECALL): WorkerState.RECALLING,
    (WorkerState.LENT, Move.FINISH_LAST): WorkerState.LENT,
    (WorkerState.LENT, Move.UNLEND_BUSY): WorkerState.BUSY,
    (WorkerState.LENT, Move.UNLEND_IDLE): WorkerState.IDLE,
    (WorkerState.RECALLING, Move.FINISH_NEXT): WorkerState.RECALLING,
    (WorkerState.RECALLING, Move.FINISH_LAST): WorkerState.RECALLING,
    (WorkerState.RECALLING, Move.GIVE_BACK_BUSY): WorkerState.BUSY,
    (WorkerState.RECALLING, Move.GIVE_BACK_IDLE): WorkerState.IDLE,
    # A worker stopped or killed while starting may still say READY before it goes.
    (WorkerState.RETIRING, Move.READY): WorkerState.RETIRING,
    (WorkerState.KILLED, Move.READY): WorkerState.KILLED,
    **{(state, Move.KILL): WorkerState.KILLED for state in _LIVE},
    **{(state, Move.EXIT): WorkerState.EXITED for state in _LIVE},
}


class WorkerStateError(RuntimeError):
    """A worker was asked to make a move its state does not allow, or its data does not agree
    with its state: a bug in jobpool."""


def next_state(state: WorkerState, move: Move) -> WorkerState:
    """The state after ``move``; raises :class:`WorkerStateError` for a move not in the table."""
    try:
        return TRANSITIONS[state, move]
    except KeyError:
        raise WorkerStateError(f"a worker in state {state.value} cannot {move.value}") from None


def allows(state: WorkerState, move: Move) -> bool:
    return (state, move) in TRANSITIONS


# --- which move an event makes ---------------------------------------------------------------


def reply_move(state: WorkerState, jobs_ahead: int) -> Optional[Move]:
    """Its running job replied: the next one sent ahead starts, or none is left. None for a
    worker we killed: its exit fails the job (and replacing it is the exit's business)."""
    if state is WorkerState.KILLED:
        return None
    return Move.FINISH_NEXT if jobs_ahead else Move.FINISH_LAST


def recall_answered_move(state: WorkerState, runs_job: bool) -> Optional[Move]:
    """It answered a recall (GIVE_BACK); None when no recall was on (a killed worker's)."""
    if state is not WorkerState.RECALLING:
        return None
    return Move.GIVE_BACK_BUSY if runs_job else Move.GIVE_BACK_IDLE


def pipe_returned_move(state: WorkerState, runs_job: bool) -> Optional[Move]:
    """The caller gave its pipe back; None when the worker was killed or exited meanwhile."""
    if state is not WorkerState.LENT:
        return None
    return Move.UNLEND_BUSY if runs_job else Move.UNLEND_IDLE


# --- the guards --------------------------------------------------------------------------------

#: States in which the worker runs (or is about to run) a job the parent sent it.
HOLDS_JOB = frozenset({WorkerState.BUSY, WorkerState.LENT, WorkerState.RECALLING})
#: States of a worker that no longer serves the queue (``PoolStats.workers`` leaves them out).
LEAVING = frozenset({WorkerState.RETIRING, WorkerState.KILLED, WorkerState.EXITED})


def may_take_ahead(
    state: WorkerState,
    jobs_ahead: int,
    job_seconds: float,
    running_for: float,
    jobs_left: Optional[int] = None,
) -> bool:
    """Whether a job may wait in the worker's pipe behind its running one (see _send_ahead):
    its recent jobs were short, the running one is still young, and few wait already; and,
    for a worker recycled after ``max_jobs_per_worker`` jobs, ``jobs_left`` (how many more it
    may be given beside the running one; None: no limit) is not used up, so that it is never
    sent a job it would not run."""
    young = SHORT_JOB_SECONDS if job_seconds < SHORT_JOB_SECONDS else ONE_AHEAD_SECONDS
    return (
        state is WorkerState.BUSY
        and jobs_ahead < jobs_ahead_limit(job_seconds)
        and (jobs_left is None or jobs_ahead < jobs_left)
        and job_seconds < ONE_AHEAD_SECONDS
        and running_for < young
    )


def jobs_ahead_limit(job_seconds: float) -> int:
    """How many jobs may wait behind a running one whose worker's jobs take ``job_seconds``:
    AHEAD_JOBS, or up to MOST_AHEAD_JOBS as long as they add up to AHEAD_SECONDS at most;
    one for jobs of SHORT_JOB_SECONDS and more (below ONE_AHEAD_SECONDS)."""
    if job_seconds * MOST_AHEAD_JOBS <= AHEAD_SECONDS:
        return MOST_AHEAD_JOBS
    if job_seconds >= SHORT_JOB_SECONDS:
        return 1
    return max(AHEAD_JOBS, int(AHEAD_SECONDS / job_seconds))


def fits_ahead(
    size: int,
    function_kept: bool,
    jobs_ahead: int = 0,
    room: Callable[[], Optional[int]] = lambda: None,
) -> bool:
    """Whether a job of ``size`` bytes may wait in a busy worker's pipe behind ``jobs_ahead``
    others: its function kept there already (no definition to send), and small enough that
    the write cannot fill the pipe (smaller still past the first AHEAD_JOBS), or, bigger, with
    ``room()`` (what the pipe can still take, None where unknown: asked only then) for twice
    its bytes and a margin."""
    if not function_kept:
        return False
    if size <= (MAX_AHEAD_BYTES if jobs_ahead < AHEAD_JOBS else MAX_MORE_AHEAD_BYTES):
        return True
    free = room()
    return free is not None and 2 * size + AHEAD_MARGIN_BYTES <= free


def recall_due_at(
    state: WorkerState, jobs_ahead: int, started_at: float, recalled_at: float
) -> Optional[float]:
    """When to take back the jobs waiting behind the running one; None if none may be."""
    if not jobs_ahead or state is not WorkerState.BUSY:
        return None
    return max(started_at, recalled_at) + RECALL_AFTER_SECONDS


def may_lend(state: WorkerState, jobs_ahead: int) -> bool:
    """Whether a caller thread may read the running job's reply itself (see _lending): only
    when that job is the only one the worker holds."""
    return state is WorkerState.BUSY and not jobs_ahead


def jobs_left(jobs_done: int, max_jobs: Optional[int]) -> Optional[int]:
    """How many jobs a busy worker may still be given beside its running one before it is
    recycled (``max_jobs_per_worker``); None: it is never recycled for its job count."""
    if max_jobs is None:
        return None
    return max(0, max_jobs - jobs_done - 1)


def due_for_recycling(state: WorkerState, jobs_done: int, max_jobs: Optional[int]) -> bool:
    """Whether to replace the worker now: it ran ``max_jobs_per_worker`` jobs and is idle."""
    return max_jobs is not None and jobs_done >= max_jobs and state is WorkerState.IDLE


#: The states in which a worker may send each message (``_messages.out_of_turn``); a killed
#: worker may still say anything, as it may have said it before it was killed.
MAY_REPORT_START = frozenset({WorkerState.STARTING, WorkerState.RETIRING, WorkerState.KILLED})
MAY_REPLY = frozenset(HOLDS_JOB | {WorkerState.KILLED})
MAY_GIVE_BACK = frozenset({WorkerState.RECALLING, WorkerState.KILLED})


# --- the rules tying a state to the data ------------------------------------------------------

# For each state, what the handle may hold: a running job, jobs sent ahead, a pipe lent to a
# caller thread (True: must, False: must not, None: either). A killed worker holds whatever it
# held until its exit hands it back, and an exited one until the exit is seen to.
_RULES: dict[WorkerState, tuple[Optional[bool], Optional[bool], Optional[bool]]] = {
    WorkerState.STARTING: (False, False, False),
    WorkerState.IDLE: (False, False, False),
    WorkerState.BUSY: (True, None, False),
    # Nothing waits behind a lent worker's job; after its reply (read by the caller), it holds
    # no job until the caller gives the pipe back, in the same hold of the lock.
    WorkerState.LENT: (None, False, True),
    WorkerState.RECALLING: (None, None, False),  # its job may end before the answer comes
    WorkerState.RETIRING: (False, False, False),
    WorkerState.KILLED: (None, None, None),
    WorkerState.EXITED: (None, None, None),
}
#: Each (state, holds a job, holds jobs ahead, lent) that agrees with the rules above.
AGREEING = frozenset(
    (state, job, ahead, lent)
    for state, rule in _RULES.items()
    for job in (False, True)
    for ahead in (False, True)
    for lent in (False, True)
    if all(want is None or want is have for want, have in zip(rule, (job, ahead, lent)))
)
_DATA = ("a running job", "jobs sent ahead", "its pipe lent to a caller")


def disagreement(state: WorkerState, job: bool, ahead: bool, lent: bool) -> Optional[str]:
    """What is wrong with a worker in ``state`` that holds this data; None if nothing is."""
    if (state, job, ahead, lent) in AGREEING:
        return None
    wrong = [
        ("without " if want else "with ") + what
        for what, want, have in zip(_DATA, _RULES[state], (job, ahead, lent))
        if want is not None and want is not have
    ]
    return f"a worker {state.value} " + " and ".join(wrong)


def check(state: WorkerState, job: bool, ahead: bool, lent: bool) -> None:
    """Raise :class:`WorkerStateError` if the data does not agree with the state."""
    if (state, job, ahead, lent) not in AGREEING:
        raise WorkerStateError(disagreement(state, job, ahead, lent))
