"""The worker side imports only what a worker needs.

The fork server imports its module (``_fork_requests.SERVER_MODULE``) once per script, and a
spawned worker imports the same worker side at every start: each module it pulls in is paid
there. These tests name the modules a worker must not import, checked in a fresh interpreter
(never by timing): a new top-level import that brings one back fails here, and should be
deferred to the function that needs it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jobpool
from conftest import WAIT
from jobpool._process._fork_requests import SERVER_MODULE

WORKER_PRELOAD = (SERVER_MODULE,)

# Modules jobpool's worker side once imported and no longer does, each for a path only some
# processes take. secrets (with hmac, hashlib): the portable mode's directory names. The
# segment modules (with mmap): a worker's first large buffer (_large_data). _remote: the
# caller's side of replies.
NOT_IN_WORKER = (
    "secrets",
    "hmac",
    "hashlib",
    "mmap",
    "jobpool._process._shared_memory",
    "jobpool._process._named_memory",
    "jobpool._remote",
    # _job (queues, futures, retries): a worker runs the work alone (_work). With it went
    # _retry, _priority (queue, heapq: not named here, as Python 3.9's collections imports it
    # at start), _condition, _deadlines.
    "jobpool._job",
    "jobpool._retry",
    "jobpool._priority",
    "queue",
)
# What a worker needs when a result fails to serialize is loaded when it starts: a job may
# have left it without a free descriptor, and an import then could not open the module's file
# (the worker died, found by the fault campaign).
ON_FAILURE_IN_WORKER = ("jobpool._pickling_advice",)

_SOURCE = str(Path(jobpool.__file__).resolve().parent.parent)


def modules_after_importing(names: tuple[str, ...]) -> set[str]:
    """``sys.modules`` of a fresh interpreter that imported ``names`` (and nothing else)."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(names)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_SOURCE, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_fork_server_preload_leaves_out_what_workers_do_not_need() -> None:
    loaded = modules_after_importing(WORKER_PRELOAD)
    assert "jobpool._process._in_worker" in loaded  # the check ran on the real worker side
    assert sorted(loaded.intersection(NOT_IN_WORKER)) == []
    assert set(ON_FAILURE_IN_WORKER) <= loaded


def test_interpreter_itself_does_not_import_them() -> None:
    """Guards the test above: a module Python loads at start would make it pass vacuously."""
    assert modules_after_importing(()).isdisjoint(NOT_IN_WORKER)


SERVER_MODULES = """
import importlib, json, sys
import multiprocessing.forkserver  # (the fork server imports it too)
for name in {names!r}:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="no fork server here"
)
def test_a_worker_imports_nothing_at_start_that_its_fork_server_did_not() -> None:
    """Each import a worker makes for itself is paid again at every start (and a recycled
    worker starts often): what every worker needs belongs in the preload."""
    code = SERVER_MODULES.format(names=list(WORKER_PRELOAD))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_SOURCE, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    in_server = set(json.loads(done.stdout))
    with jobpool.Pool(1, backend="process", start_method="forkserver") as pool:
        # eval travels by reference and imports nothing: the worker's modules as it started
        in_worker = set(pool.submit(eval, "sorted(__import__('sys').modules)").result(WAIT))
    assert "jobpool._process._in_worker" in in_worker
    assert sorted(in_worker - in_server) == []


FORK_CHILD = """
import os, sys
import jobpool._process._context  # its fork hook forgets an inherited fork server
pid = os.fork()
if pid == 0:
    os._exit(10 + ("multiprocessing.forkserver" in sys.modules))
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_fork_imports_no_fork_server_machinery_the_parent_had_not() -> None:
    """A child forked by a process that never used a fork server (a worker under fork, a job's
    own fork) has nothing to forget, and must not pay for importing the stdlib's fork server
    with its resource tracker to find that out."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_SOURCE, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", FORK_CHILD], env=env, capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "10"
