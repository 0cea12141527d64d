"""One module per workload. Each defines NAME, TITLE, COLUMNS, PRIMARY, HIGHER_IS_BETTER,
``tasks(quick, cpu_n)`` (the child processes to start) and ``run(impl, params)`` (child side).
Optional: REFERENCE (flavour -> impl the ratio is taken against), ``derive(rows, params)`` and
ROUNDS: in a full run the task list is run that many times, alternating direction, so that load
from other users of a shared machine spreads over every implementation alike.
"""

from __future__ import annotations

from types import ModuleType

from . import (
    big_closure,
    big_data,
    chain,
    cpu,
    crash,
    fifty,
    io,
    lazy,
    map_tiny,
    mp_pool,
    overhead,
    per_worker,
    recycling,
    retries,
    roundtrip,
    startup,
    tutorial,
)

ALL: dict[str, ModuleType] = {
    m.NAME: m
    for m in (
        overhead,
        roundtrip,
        map_tiny,
        lazy,
        big_closure,
        big_data,
        cpu,
        io,
        startup,
        crash,
        per_worker,
        retries,
        mp_pool,
        recycling,
        tutorial,
        fifty,
        chain,
    )
}
