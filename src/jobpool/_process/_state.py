"""The states of a worker process as the dispatcher sees it, and the moves between them.

Two rules, after h11's ``_state.py``: everything that decides whether a worker may do something
lives in this one table, and this module knows nothing of pipes, processes or jobs. A move that
is not in the table raises :class:`WorkerStateError` at once (a bug in jobpool), instead of
leaving a worker in a state nobody expects, to hang later.

    STARTING --ready--> IDLE --run--> BUSY --finish_last--> IDLE
        |                 |            |  \\--run_ahead / finish_next--> BUSY
        |                 |            |--lend--> LENT --unlend_busy--> BUSY
        |                 |            |            \\--finish_last / unlend_idle--> IDLE
        |                 |            \\--recall--> RECALLING --give_back_busy--> BUSY
        |                 |                            \\--give_back_idle--> IDLE
        \\--stop--> RETIRING <--stop--/
    any state but EXITED --kill--> KILLED;  any state --exit--> EXITED

(``finish_next``/``finish_last`` also keep RECALLING: a job may end while the recall is on its
way.) A worker in BUSY, LENT or RECALLING holds a job; jobs may wait behind it only in BUSY and
RECALLING (see ``_send_ahead``).
"""

from __future__ import annotations

import enum


class WorkerState(enum.Enum):
    # Members are singletons: hashing by identity is right, and C-fast (a move looks its
    # (state, move) pair up on every job; Enum's own __hash__ is Python code).
    __hash__ = object.__hash__

    STARTING = "starting"  # the process runs; it has not said READY yet
    IDLE = "idle"  # ready, holds no job: the next job may go to it
    BUSY = "busy"  # runs a job; short jobs may wait in its pipe behind it (_send_ahead)
    LENT = "lent"  # runs a job whose waiting caller reads the reply itself (_lending)
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


_LIVE = (
    WorkerState.STARTING,
    WorkerState.IDLE,
    WorkerState.BUSY,
    WorkerState.LENT,
    WorkerState.RECALLING,
    WorkerState.RETIRING,
    WorkerState.KILLED,
)

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
    (WorkerState.LENT, Move.FINISH_LAST): WorkerState.IDLE,
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

#: States in which the worker runs (or is about to run) a job the parent sent it.
HOLDS_JOB = frozenset({WorkerState.BUSY, WorkerState.LENT, WorkerState.RECALLING})


class WorkerStateError(RuntimeError):
    """A worker was asked to make a move its state does not allow: a bug in jobpool."""


def next_state(state: WorkerState, move: Move) -> WorkerState:
    """The state after ``move``; raises :class:`WorkerStateError` for a move not in the table."""
    try:
        return TRANSITIONS[state, move]
    except KeyError:
        raise WorkerStateError(f"a worker in state {state.value} cannot {move.value}") from None
