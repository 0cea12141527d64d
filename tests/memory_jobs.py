"""Jobs that use memory, for test_memory.py (importable by name from every start method)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Optional

MB = 1 << 20
_LEAKED: list[bytearray] = []


def _touch(block: bytearray) -> None:
    for i in range(0, len(block), 4096):
        block[i] = 1


def grow(
    total_mb: int,
    step_mb: int = 8,
    rate_mb_s: Optional[float] = None,
    progress: Optional[str] = None,
) -> int:
    """Allocate ``total_mb`` in steps, each one touched (resident), at about ``rate_mb_s``;
    after each step write how much is held to ``progress`` (so the test knows how far it got)."""
    held = []
    start = time.monotonic()
    done = 0
    while done < total_mb:
        block = bytearray(step_mb * MB)
        _touch(block)
        held.append(block)
        done += step_mb
        if progress is not None:
            with open(progress + ".tmp", "w") as f:
                f.write(str(done * MB))
            os.replace(progress + ".tmp", progress)
        if rate_mb_s is not None:  # the pace the job allocates at (its behaviour, not a wait)
            ahead = done / rate_mb_s - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    return done


def grow_in_child(total_mb: int, pid_file: str) -> int:
    """Fork a child that allocates ``total_mb``; wait for it. The child's pid goes to
    ``pid_file`` first."""
    pid = os.fork()
    if pid == 0:
        try:
            grow(total_mb)
        finally:
            os._exit(0)
    with open(pid_file, "w") as f:
        f.write(str(pid))
    _, status = os.waitpid(pid, 0)
    return status


def grow_in_program(total_mb: int) -> int:
    """Run an external program (a new Python, exec'd) that allocates ``total_mb``."""
    code = (
        "import sys\nheld=[]\n"
        f"for _ in range({total_mb // 8}):\n"
        "    b=bytearray(8<<20)\n"
        "    for i in range(0,len(b),4096): b[i]=1\n"
        "    held.append(b)\n"
    )
    return subprocess.run([sys.executable, "-c", code]).returncode


def leak(mb: int) -> int:
    """Keep ``mb`` more of memory in the worker for good (a leaky C extension's cache); return
    the worker's private resident memory after it."""
    block = bytearray(mb * MB)
    _touch(block)
    _LEAKED.append(block)
    return private_resident()


def private_resident(_: Any = None) -> int:
    with open("/proc/self/statm") as f:
        fields = f.read().split()
    return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")


def read_array(array: Any) -> float:
    """Read every page of a (shared-memory) argument."""
    return float(array.sum())


def leave_cgroup_and_grow(total_mb: int) -> int:
    """Move this worker out of its memory cgroup into the one above, then allocate."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.strip().split(":", 2)
            if "memory" in controllers.split(","):
                up = os.path.dirname("/sys/fs/cgroup/memory" + path)
                with open(os.path.join(up, "cgroup.procs"), "w") as procs:
                    procs.write(str(os.getpid()))
    return grow(total_mb)


def cgroup_of_self(_: Any = None) -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.strip().split(":", 2)
            if "memory" in controllers.split(","):
                return path
    return ""


def exec_and_grow(total_mb: int) -> None:
    """Replace the worker itself with another program (``os.execv``) that allocates."""
    code = (
        "held=[]\n"
        f"for _ in range({total_mb // 8}):\n"
        "    b=bytearray(8<<20)\n"
        "    for i in range(0,len(b),4096): b[i]=1\n"
        "    held.append(b)\n"
    )
    os.execv(sys.executable, [sys.executable, "-c", code])


def grow_the_first_time(total_mb: int, marker: str) -> int:
    """Grow past the limit on the first run only (``marker`` is created then): what a job does
    when its memory went to something that is gone on its next attempt."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        return grow(total_mb)
    return 0
