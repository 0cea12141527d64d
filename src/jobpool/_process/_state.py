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


S, M = WorkerState, Move

_LIVE = (S.STARTING, S.IDLE, S.BUSY, S.LENT, S.RECALLING, S.RETIRING, S.KILLED)

TRANSITIONS: dict[tuple[WorkerState, Move], WorkerState] = {
    (S.STARTING, M.READY): S.IDLE,
    (S.STARTING, M.STOP): S.RETIRING,
    (S.IDLE, M.RUN): S.BUSY,
    (S.IDLE, M.STOP): S.RETIRING,
    (S.BUSY, M.RUN_AHEAD): S.BUSY,
    (S.BUSY, M.FINISH_NEXT): S.BUSY,
    (S.BUSY, M.FINISH_LAST): S.IDLE,
    (S.BUSY, M.LEND): S.LENT,
    (S.BUSY, M.RECALL): S.RECALLING,
    (S.LENT, M.FINISH_LAST): S.IDLE,
    (S.LENT, M.UNLEND_BUSY): S.BUSY,
    (S.LENT, M.UNLEND_IDLE): S.IDLE,
    (S.RECALLING, M.FINISH_NEXT): S.RECALLING,
    (S.RECALLING, M.FINISH_LAST): S.RECALLING,
    (S.RECALLING, M.GIVE_BACK_BUSY): S.BUSY,
    (S.RECALLING, M.GIVE_BACK_IDLE): S.IDLE,
    # A worker stopped or killed while starting may still say READY before it goes.
    (S.RETIRING, M.READY): S.RETIRING,
    (S.KILLED, M.READY): S.KILLED,
    **{(state, M.KILL): S.KILLED for state in _LIVE},
    **{(state, M.EXIT): S.EXITED for state in _LIVE},
}

#: States in which the worker runs (or is about to run) a job the parent sent it.
HOLDS_JOB = frozenset({S.BUSY, S.LENT, S.RECALLING})


class WorkerStateError(RuntimeError):
    """A worker was asked to make a move its state does not allow: a bug in jobpool."""


def next_state(state: WorkerState, move: Move) -> WorkerState:
    """The state after ``move``; raises :class:`WorkerStateError` for a move not in the table."""
    try:
        return TRANSITIONS[state, move]
    except KeyError:
        raise WorkerStateError(f"a worker in state {state.value} cannot {move.value}") from None
