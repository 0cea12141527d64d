"""Amounts of memory as users write them (``2 GiB``, ``"500MB"``, ``1 << 30``), checked once.

``job_memory_limit=`` and ``max_worker_memory=`` take a number of bytes or a string with a
unit; what is absurd is refused at once, naming the fix, rather than turned into a limit that
stops every job (a few bytes: ``job_memory_limit=500`` meant "500 MB") or none (more than
the machine has).
"""

from __future__ import annotations

import math
import os
import re
from typing import Optional

#: A worker process needs this much to run Python at all: a smaller limit stops every job.
MIN_MEMORY = 32 << 20

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_AMOUNT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")


def format_bytes(n: float) -> str:
    """``n`` bytes in words: ``"512.0 MiB"``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def machine_memory() -> Optional[int]:
    """The machine's physical memory in bytes, where the system says."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_platform(name: str) -> None:
    """Raise ValueError where a worker's memory cannot be watched (no /proc: not Linux)."""
    from . import _platform

    if not _platform.PROC:
        raise ValueError(
            f"{name}= needs Linux: jobpool reads a worker's memory in /proc (and holds it with "
            "a memory cgroup where it can), which this system does not have; leave it unset, "
            "or use max_jobs_per_worker= to replace workers by count"
        )


def parse_memory(name: str, value: object) -> Optional[int]:
    """``value`` (an int of bytes, or a string such as ``"2 GiB"``) as bytes; None stays None.

    Raises TypeError for another type, ValueError for a string that is not an amount, and for
    an amount below :data:`MIN_MEMORY` or above the machine's memory.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(
            f"{name} must be a number of bytes (int) or a string such as '2 GiB' or '500MB', "
            f"not {type(value).__name__} ({value!r})"
        )
    if isinstance(value, str):
        match = _AMOUNT.match(value)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"{name}={value!r} is not an amount of memory; write a number of bytes or a "
                "number with a unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB "
                "(powers of 1024), e.g. '2 GiB' or '500MB'"
            )
        amount = float(match.group(1)) * _UNITS[unit]
        if not math.isfinite(amount):
            raise ValueError(f"{name}={value!r} is not a finite amount of memory")
        size = int(amount)
    else:
        size = value
    if size < MIN_MEMORY:
        raise ValueError(
            f"{name}={value!r} is {format_bytes(size)}, below the {format_bytes(MIN_MEMORY)} a "
            "worker process needs just to run Python, so every job would be stopped; give the "
            "amount with its unit (e.g. '500 MB' rather than 500)"
        )
    total = machine_memory()
    if total is not None and size > total:
        raise ValueError(
            f"{name}={value!r} is {format_bytes(size)}, more than this machine's memory "
            f"({format_bytes(total)}): it could never be reached; use a smaller amount, or None "
            "for no limit"
        )
    return size
