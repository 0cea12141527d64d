"""Connecting a Dask client, for both ways a pool gets one (an address, or its own cluster).

distributed gives the thread of a new client's event loop a fixed 10 s to start and, past it,
fails with a bare ``AssertionError`` (``distributed.utils.LoopRunner._start_unlocked``). On a
machine busy enough for that (seen once in CI, in a test's own client) the connection is tried
again rather than failing the pool with an error that says nothing of what happened.
"""

from __future__ import annotations

import logging
from typing import Any

import distributed

_log = logging.getLogger("jobpool")

LOOP_START_TRIES = 3


def new_client(target: Any) -> Any:
    """A ``Client`` for ``target`` (an address or a cluster), not made the default one."""
    for attempt in range(LOOP_START_TRIES):
        try:
            return distributed.Client(target, set_as_default=False)  # type: ignore[no-untyped-call]
        except AssertionError as exc:
            if attempt == LOOP_START_TRIES - 1 or not loop_did_not_start(exc):
                raise
            _log.warning("the Dask client's event loop did not start in time; trying again")
    raise AssertionError("unreachable")


def loop_did_not_start(exc: AssertionError) -> bool:
    """Whether ``exc`` is distributed saying a client's event loop thread did not start."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == "_start_unlocked"
