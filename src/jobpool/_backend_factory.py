"""Which backend a name means: the factories that make each one, and the options each honours.

The pool (``_pool``) asks here for the backend its ``backend=`` names; each backend module imports
only the contract (``_contract``), never this table, so no backend imports another or the
table that imports them all. A backend's module is imported only when a pool asks for it: a
thread pool never imports the process machinery, and ``distributed`` is imported only for
``backend="dask"`` (and said what to install if it is missing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

from ._contract import Backend, BackendSetup

BackendFactory = Callable[[BackendSetup, Mapping[str, Any]], Backend]


def _thread(setup: BackendSetup, options: Mapping[str, Any]) -> Backend:
    from ._thread import ThreadBackend

    return ThreadBackend(setup)


def _process(setup: BackendSetup, options: Mapping[str, Any]) -> Backend:
    from ._memory_size import check_platform
    from ._process._backend import ProcessBackend
    from ._process._context import get_context
    from ._process._large_data import large_data

    for option in ("job_memory_limit", "max_worker_memory"):
        if options.get(option) is not None:
            check_platform(option)

    threshold, writable = options.get("shared_memory", (None, False))
    return ProcessBackend(
        setup,
        get_context(options.get("start_method")),
        options.get("max_jobs_per_worker"),
        large_data(threshold, writable),
        options.get("max_worker_memory"),
    )


def _dask(setup: BackendSetup, options: Mapping[str, Any]) -> Backend:
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "backend='dask' needs the 'distributed' package: pip install \"jobpool[dask]\" "
            '(from a checkout of jobpool: pip install ".[dask]")'
        ) from exc
    from ._dask._backend import DaskBackend

    return DaskBackend(setup, address=options.get("address"), client=options.get("client"))


#: The backends by name. Tests add an in-memory fake here.
FACTORIES: dict[str, BackendFactory] = {"thread": _thread, "process": _process, "dask": _dask}

#: The options only some backends honour; any other backend refuses them.
OPTIONS_FOR = {
    "start_method": ("process",),
    "max_jobs_per_worker": ("process",),
    "job_memory_limit": ("process",),
    "max_worker_memory": ("process",),
    "address": ("dask",),
    "client": ("dask",),
}

#: Why an option is refused where it is, when "applies only to" does not say enough.
_WHY_NOT = {
    ("job_memory_limit", "thread"): (
        "threads share one process, so one job's memory cannot be told from another's or "
        "stopped alone; use backend='process'"
    ),
    ("job_memory_limit", "dask"): (
        "jobpool does not run Dask's worker processes, so it cannot stop one job there; give "
        "the cluster's workers a memory_limit= (Dask's nanny restarts a worker past it) or use "
        "backend='process'"
    ),
    ("max_worker_memory", "thread"): "threads share the caller's process, which is never replaced",
    ("max_worker_memory", "dask"): (
        "Dask restarts its own workers: give them a memory_limit= (the nanny restarts a worker "
        "near it, see Dask's worker memory management)"
    ),
}


def refuse_option(option: str, name: str) -> None:
    """Raise ValueError if backend ``name`` cannot honour ``option`` (set to something)."""
    allowed = OPTIONS_FOR.get(option)  # not listed: every backend takes it
    if allowed is None or name in allowed:
        return
    names = " or ".join(repr(b) for b in allowed)
    message = f"{option}= applies only to backend={names}, not backend={name!r}"
    why = _WHY_NOT.get((option, name))
    raise ValueError(message + (f": {why}" if why else ""))


def make_backend(name: str, setup: BackendSetup, options: Mapping[str, Any]) -> Backend:
    """The backend called ``name``; an option it cannot honour is an error, never ignored."""
    for option, value in options.items():
        if value is not None:
            refuse_option(option, name)
    return FACTORIES[name](setup, options)
