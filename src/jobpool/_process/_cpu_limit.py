"""How many CPUs a pool's processes can use at once: the CPUs this process may run on (its
affinity), or fewer where its cgroup caps its CPU time (a container's ``--cpus``, systemd's
``CPUQuota=``). A quota of 150 ms of CPU per 100 ms lets two CPUs run, whatever the machine has.

A pool asks this once, when it is made (``Workers.cpus``): how far growth may go before the CPUs
are taken (``Workers.grow``), and whether a thread waiting for a reply may look for it on a CPU
of its own (``_lending``). Where no quota can be read (no cgroups, turned off, not Linux) the
affinity alone counts.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Optional

from .. import _platform
from ._cgroups import memberships

_Quota = Callable[[str], Optional[float]]  # a group's quota, in CPUs, read from its directory

PROC_CGROUP = "/proc/self/cgroup"
# Where the cgroup hierarchies are mounted: cgroup v1's cpu controller (under one of the names
# systems give it), and the unified hierarchy of v2.
V1_ROOTS = ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuacct,cpu")
V2_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")


def cpus_allowed() -> int:
    """The CPUs this process can use at once: its affinity, capped by its cgroup's quota."""
    cpus = _platform.usable_cpus()
    quota = quota_cpus() if _platform.CGROUPS else None
    if quota is None:
        return cpus
    return max(1, min(cpus, math.ceil(quota)))


def quota_cpus() -> Optional[float]:
    """The CPUs' worth of time that this process's cgroup and its ancestors allow (the least of
    their quotas); None where none is set or none can be read."""
    groups = memberships(PROC_CGROUP)
    if groups is None:
        return None
    limits: list[float] = []
    for controllers, path in groups:
        if not controllers:
            limits += _limits(path, V2_ROOTS, _v2_quota)
        elif "cpu" in controllers:
            limits += _limits(path, V1_ROOTS, _v1_quota)
    return min(limits) if limits else None


def _limits(path: str, roots: tuple[str, ...], quota: _Quota) -> list[float]:
    """The quotas set on the group at ``path`` and on each group above it, under the first of
    ``roots`` that holds that group."""
    for root in roots:
        directory = root + path.rstrip("/")
        if not os.path.isdir(directory):
            continue
        found: list[float] = []
        while True:
            value = quota(directory)
            if value is not None:
                found.append(value)
            if len(directory) <= len(root):
                return found
            directory = os.path.dirname(directory)
    return []


def _v2_quota(directory: str) -> Optional[float]:
    """``cpu.max``: "max 100000" (no limit) or "<quota> <period>" in microseconds."""
    text = _read(os.path.join(directory, "cpu.max"))
    if text is None:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_quota(directory: str) -> Optional[float]:
    """``cpu.cfs_quota_us`` (-1: no limit) over ``cpu.cfs_period_us``."""
    quota = _read(os.path.join(directory, "cpu.cfs_quota_us"))
    period = _read(os.path.join(directory, "cpu.cfs_period_us"))
    if quota is None or period is None:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> Optional[float]:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    if q <= 0 or p <= 0:
        return None
    return q / p


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, ValueError):
        return None
