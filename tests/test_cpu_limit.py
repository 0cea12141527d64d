"""How many CPUs a pool counts on: the affinity, capped by the cgroup's CPU quota.

Read from a made-up cgroup hierarchy in a temporary directory (this machine's own quota, if it
has one, is whatever it is): cgroup v2's ``cpu.max`` and v1's ``cpu.cfs_quota_us`` over
``cpu.cfs_period_us``, on the process's group and on every group above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import PROCESS
from jobpool import _platform
from jobpool._process import _cpu_limit


def hierarchy(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    own: str,
    groups: dict[str, dict[str, str]],
    affinity: int = 8,
) -> None:
    """A process in ``own`` (a /proc/self/cgroup text), under the groups given as directories
    (relative to a v1 or v2 root) and the files in each."""
    proc = tmp_path / "cgroup"
    proc.write_text(own)
    v1 = tmp_path / "v1"
    v2 = tmp_path / "v2"
    for root in (v1, v2):
        root.mkdir()
    for directory, files in groups.items():
        place = tmp_path / directory
        place.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (place / name).write_text(text + "\n")
    monkeypatch.setattr(_cpu_limit, "PROC_CGROUP", str(proc))
    monkeypatch.setattr(_cpu_limit, "V1_ROOTS", (str(v1),))
    monkeypatch.setattr(_cpu_limit, "V2_ROOTS", (str(v2),))
    monkeypatch.setattr(_platform, "usable_cpus", lambda: affinity)
    monkeypatch.setattr(_platform, "CGROUPS", True)


def test_v2_the_least_quota_of_the_group_and_those_above_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hierarchy(
        tmp_path,
        monkeypatch,
        "0::/box/job\n",
        {
            "v2/box": {"cpu.max": "150000 100000"},  # 1.5 CPUs for the whole box
            "v2/box/job": {"cpu.max": "max 100000"},  # none of its own
        },
    )
    assert _cpu_limit.quota_cpus() == 1.5
    assert _cpu_limit.cpus_allowed() == 2  # both may run, each part of the time


def test_v1_quota_over_period(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hierarchy(
        tmp_path,
        monkeypatch,
        "5:memory:/elsewhere\n4:cpu,cpuacct:/box\n0::/\n",
        {"v1/box": {"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"}},
    )
    assert _cpu_limit.quota_cpus() == 0.5
    assert _cpu_limit.cpus_allowed() == 1


def test_a_quota_above_the_affinity_leaves_the_affinity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hierarchy(
        tmp_path,
        monkeypatch,
        "0::/box\n",
        {"v2/box": {"cpu.max": "1600000 100000"}},
        affinity=4,
    )
    assert _cpu_limit.cpus_allowed() == 4


@pytest.mark.parametrize(
    "files",
    [
        {"cpu.max": "max 100000"},  # no limit
        {"cpu.max": "lots 100000"},  # not a number
        {"cpu.max": "100000"},  # not two fields
        {"cpu.max": "0 100000"},  # nothing sensible
        {},  # no cpu controller here
    ],
)
def test_no_quota_that_can_be_read_leaves_the_affinity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]
) -> None:
    hierarchy(tmp_path, monkeypatch, "0::/box\n", {"v2/box": files}, affinity=3)
    assert _cpu_limit.quota_cpus() is None
    assert _cpu_limit.cpus_allowed() == 3


def test_v1_without_a_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hierarchy(
        tmp_path,
        monkeypatch,
        "4:cpu:/box\n",
        {"v1/box": {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"}},
        affinity=2,
    )
    assert _cpu_limit.cpus_allowed() == 2


def test_nothing_to_read_leaves_the_affinity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hierarchy(tmp_path, monkeypatch, "garbage\n0::/not/there\n", {}, affinity=5)
    assert _cpu_limit.cpus_allowed() == 5
    monkeypatch.setattr(_cpu_limit, "PROC_CGROUP", str(tmp_path / "missing"))
    assert _cpu_limit.cpus_allowed() == 5


def test_cgroups_turned_off_leave_the_affinity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hierarchy(tmp_path, monkeypatch, "0::/box\n", {"v2/box": {"cpu.max": "100000 100000"}})
    monkeypatch.setattr(_platform, "CGROUPS", False)
    assert _cpu_limit.cpus_allowed() == 8


@pytest.mark.parametrize("backend", PROCESS)
def test_a_pool_counts_on_the_cpus_its_quota_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_pool: Any, backend: str
) -> None:
    hierarchy(tmp_path, monkeypatch, "0::/box\n", {"v2/box": {"cpu.max": "100000 100000"}})
    pool = make_pool(backend, workers=4)
    assert pool._backend._dispatcher.workers.cpus == 1
