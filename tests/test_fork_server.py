"""jobpool's own fork server (``_fork_server``, ``_fork_requests``): how it fails, and lives on.

The everyday path (every ``forkserver`` pool of the suite starts its workers there) is tested
everywhere else; here, what a server must survive: a request it has no descriptor for, its own
death, and a caller that forks and then dies.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import START_METHODS, WAIT, MakePool
from jobpool._process import _fork_requests
from proctree import descendants, kill_and_reap, subreaper, wait_exited

pytestmark = pytest.mark.skipif("forkserver" not in START_METHODS, reason="no fork server here")
TESTS = str(Path(__file__).resolve().parent)


@pytest.mark.linux_only("proc")
def test_a_request_the_server_has_no_descriptor_for_is_refused_and_the_next_served(
    make_pool: MakePool,
) -> None:
    """The kernel drops the descriptors of a message its reader cannot hold: the server reads the
    request whole, refuses it (``EMFILE``) and serves the next one, where the standard library's
    server died and reported every worker it had started as exited."""
    import resource

    pool = make_pool("process-forkserver", workers=1)
    assert pool.submit(abs, -1).result(WAIT) == 1
    server = _fork_requests.server_pid()
    assert server is not None
    limits = resource.prlimit(server, resource.RLIMIT_NOFILE)
    read_end, write_end = os.pipe()
    try:
        # Only 0, 1 and 2 below the limit: every descriptor it holds stays, none can be added.
        resource.prlimit(server, resource.RLIMIT_NOFILE, (3, limits[1]))
        with pytest.raises(OSError) as refused:
            _fork_requests._SERVER.fork(b"\x80" * 300_000, [write_end, read_end, read_end])
        assert refused.value.errno == errno.EMFILE
        assert "fork server" in str(refused.value)
    finally:
        resource.prlimit(server, resource.RLIMIT_NOFILE, limits)
        os.close(read_end)
        os.close(write_end)
    other = make_pool("process-forkserver", workers=1)  # a new worker, from the same server
    assert other.submit(abs, -2).result(WAIT) == 2
    assert pool.submit(abs, -3).result(WAIT) == 3
    assert _fork_requests.server_pid() == server


@pytest.mark.linux_only("proc")
def test_a_fork_server_that_died_is_replaced_and_its_workers_serve_on(
    make_pool: MakePool,
) -> None:
    pool = make_pool("process-forkserver", workers=1)
    worker = pool.submit(os.getpid).result(WAIT)
    server = _fork_requests.server_pid()
    assert server is not None
    os.kill(server, signal.SIGKILL)
    assert not wait_exited({server}, WAIT)
    assert pool.submit(os.getpid).result(WAIT) == worker
    other = make_pool("process-forkserver", workers=1)
    assert other.submit(abs, -4).result(WAIT) == 4
    assert _fork_requests.server_pid() not in (None, server)
    assert not os.path.exists(f"/proc/{server}"), "the dead server was left a zombie"


MOVING_CALLER = """
import multiprocessing, os, sys
sys.path.insert(0, {tests!r})
from jobpool import Pool

if __name__ == "__main__":
    with Pool(1, backend="process") as pool:  # the fork server starts here
        assert pool.submit(abs, -1).result(60) == 1
    os.chdir({elsewhere!r})
    sys.path.append({modules!r})
    sys.argv[1:] = ["--moved"]
    multiprocessing.set_start_method("spawn")
    import placed  # found on the new path only
    with Pool(1, backend="process", start_method="forkserver") as pool:
        print(pool.submit(placed.where).result(60) == placed.where())
"""

PLACED = """
import multiprocessing, os, sys


def where():
    return os.getcwd(), sys.argv[1:], multiprocessing.get_start_method(allow_none=True)
"""


def test_a_worker_takes_the_path_directory_and_argv_its_caller_has_now(tmp_path: Path) -> None:
    """As the standard library's fork server gives each worker the caller's state at the
    worker's start (its preparation data), not at the server's: a module found on a path added
    since, the working directory, ``sys.argv``, the start method set."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "placed.py").write_text(PLACED)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = MOVING_CALLER.format(tests=TESTS, elsewhere=str(elsewhere), modules=str(modules))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True", done.stderr


FORKING_CALLER = """
import os, sys, time
sys.path.insert(0, {tests!r})
from jobpool import Pool
from jobpool._process import _fork_requests

pool = Pool(1, backend="process", start_method="forkserver")
assert pool.submit(abs, -1).result(60) == 1
if os.fork() == 0:  # a child of the caller that outlives it
    time.sleep(600)  # killed by the test
    os._exit(0)
print(_fork_requests.server_pid(), flush=True)
sys.stdin.readline()
"""


@pytest.mark.linux_only("proc", "subreaper")
def test_the_fork_server_ends_with_its_caller_though_a_fork_of_the_caller_lives() -> None:
    """A forked child inherits the caller's end of the server's socket; it closes its copy at
    the fork, so the server still sees its caller's death."""
    with subreaper():
        caller = subprocess.Popen(
            [sys.executable, "-c", FORKING_CALLER.format(tests=TESTS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        family: set[int] = set()
        try:
            assert caller.stdout is not None
            server = int(caller.stdout.readline())
            family = descendants(caller.pid)
            assert server in family  # with its worker, the fork (and the resource tracker)
            caller.kill()
            caller.wait(WAIT)
            still = wait_exited({server}, WAIT)
            assert not still, "the fork server outlived its caller"
        finally:
            family |= descendants(caller.pid)
            if caller.poll() is None:
                caller.kill()
                caller.wait(WAIT)
            leftovers = kill_and_reap(family)
        assert not leftovers, f"processes still there: {leftovers}"
