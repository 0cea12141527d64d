"""Scripts as people write them: no ``__main__`` guard, fed on stdin, ``-c``, ``-m``, a notebook.

Each case runs a real child interpreter, on each start method. Workers never import the user's
``__main__``, so the script's top level runs exactly once, and its functions, classes and
instances travel by value: its exception class is caught by ``except`` in the script, its
result class passes ``isinstance``, a global changed between two submits is seen by the next
job, and an initializer defined in the script sets module-level state its jobs can read. The test
is a child subreaper, so every process the child leaves behind comes back to it to be checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import START_METHODS, WAIT
from proctree import descendants, reap, subreaper

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="uses /proc and prctl(PR_SET_CHILD_SUBREAPER)"
)

ROOT = Path(__file__).resolve().parent.parent

# No `if __name__ == "__main__":` anywhere: the top level builds the pool and uses it.
SCRIPT = """
import os, sys
import jobpool
print("TOP", os.getpid(), flush=True)

class MyError(Exception):
    pass

class MyResult:
    def __init__(self, value):
        self.value = value

TAG = None

def init(tag):
    global TAG
    TAG = tag

OFFSET = 1

def job(x):
    if x < 0:
        raise MyError(f"negative {x}")
    return MyResult(x + OFFSET)

def tag_and_pid(_):
    return TAG, os.getpid()

pool = jobpool.Pool(2, backend="process", start_method=METHOD, initializer=init,
                    initargs=("ready",))
print("MAP", [r.value for r in pool.map(job, range(4))], flush=True)
print("IS_RESULT", isinstance(pool.submit(job, 1).result(), MyResult), flush=True)
try:
    pool.submit(job, -1).result()
except MyError as exc:
    print("CAUGHT", exc, flush=True)
OFFSET = 100
print("GLOBAL", pool.submit(job, 1).result().value, flush=True)
tags = [pool.submit(tag_and_pid, i).result() for i in range(6)]
print("TAGS", sorted({tag for tag, _ in tags}), flush=True)
pool.shutdown()
print("DONE", flush=True)
"""

# What IPython and Jupyter do: the user's code runs in a module of their own, put in place as
# __main__ after the interpreter started (no file behind it, or another one than the code's).
NOTEBOOK = """
import sys, types
main = types.ModuleType("__main__")
main.__dict__["__builtins__"] = __builtins__
sys.modules["__main__"] = main
exec(compile({code!r}, "<ipython-input-1>", "exec"), main.__dict__)
"""

EXPECTED = [
    "MAP [1, 2, 3, 4]",
    "IS_RESULT True",
    "CAUGHT negative -1",
    "GLOBAL 101",
    "TAGS ['ready']",
    "DONE",
]


def run_child(args: list[str], stdin: str | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a child interpreter as a subreaper would see it; check that it leaves nothing."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    with subreaper():
        before = descendants(os.getpid())
        try:
            done = subprocess.run(
                [sys.executable, *args],
                input=stdin,
                capture_output=True,
                text=True,
                cwd=cwd,
                env=env,
                timeout=WAIT,
            )
        finally:
            leftovers = reap(descendants(os.getpid()) - before)
    assert not leftovers, f"processes left behind: {leftovers}"
    return done


def check(done: subprocess.CompletedProcess[str]) -> None:
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    tops = [line for line in lines if line.startswith("TOP ")]
    assert len(tops) == 1, f"the top level ran {len(tops)} times:\n{done.stdout}\n{done.stderr}"
    assert [line for line in lines if not line.startswith("TOP ")] == EXPECTED, done.stderr


def script(method: str) -> str:
    return SCRIPT.replace("METHOD", repr(method))


@pytest.mark.parametrize("method", START_METHODS)
def test_script_file_without_main_guard(method: str, tmp_path: Path) -> None:
    path = tmp_path / "guardless.py"
    path.write_text(script(method))
    check(run_child([str(path)], None, tmp_path))


@pytest.mark.parametrize("method", START_METHODS)
def test_script_on_stdin(method: str, tmp_path: Path) -> None:
    check(run_child(["-"], script(method), tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("method", START_METHODS)
def test_script_with_dash_c(method: str, tmp_path: Path) -> None:
    check(run_child(["-c", script(method)], None, tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("method", START_METHODS)
def test_script_run_as_module(method: str, tmp_path: Path) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tool.py").write_text(script(method))
    check(run_child(["-m", "mypkg.tool"], None, tmp_path))


@pytest.mark.parametrize("method", START_METHODS)
def test_notebook_style_main(method: str, tmp_path: Path) -> None:
    path = tmp_path / "launcher.py"
    path.write_text(NOTEBOOK.format(code=script(method)))
    check(run_child([str(path)], None, tmp_path))


IMPORT_TIME_POOL = """
import multiprocessing
import jobpool

POOL = jobpool.Pool(2, backend="process", start_method=METHOD)

def children_here(_):
    # A worker imports this module to run this function, which builds POOL there too.
    return len(multiprocessing.active_children())
"""

USES_IMPORT_TIME_POOL = """
import pooled
print("COUNTS", sorted(set(pooled.POOL.map(pooled.children_here, range(8)))), flush=True)
pooled.POOL.shutdown()
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_built_when_a_module_is_imported_starts_nothing_in_workers(
    method: str, tmp_path: Path
) -> None:
    """A pool made at import time of a module the workers import starts no worker processes of
    its own there (workers start with a pool's first job): no fork bomb, no hang."""
    (tmp_path / "pooled.py").write_text(IMPORT_TIME_POOL.replace("METHOD", repr(method)))
    done = run_child(["-c", USES_IMPORT_TIME_POOL], None, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["COUNTS [0]"], done.stderr


NESTED = """
import os, sys
from jobpool import Pool

def inner_square(x):
    return x * x, os.getpid()

def nested(n, backend):
    options = {"start_method": METHOD} if backend == "process" else {}
    with Pool(2, backend=backend, **options) as inner:
        results = list(inner.map(inner_square, range(n), chunksize=1))
    ran_here = {pid for _, pid in results} == {os.getpid()}
    return [value for value, _ in results], ran_here

with Pool(2, backend="process", start_method=METHOD) as pool:
    for backend in ("thread", "process"):
        print(backend, *pool.submit(nested, 4, backend).result())
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_a_job_may_open_its_own_pool(method: str, tmp_path: Path) -> None:
    done = run_child(["-c", NESTED.replace("METHOD", repr(method))], None, tmp_path)
    assert done.returncode == 0, done.stderr
    # Thread workers run in the job's own process, process workers in processes of their own.
    assert done.stdout.splitlines() == ["thread [0, 1, 4, 9] True", "process [0, 1, 4, 9] False"]


GLOBALS_AT_SUBMIT = """
import sys
import jobpool

OFFSET = 1

def job(x):
    return x + OFFSET

def other(x):
    return x * OFFSET

with jobpool.Pool(1, backend="process", start_method=METHOD) as pool:
    for _ in range(3):  # warm: every import done, so each function's pickle is remembered
        pool.submit(abs, -1).result()
        pool.submit(job, 0).result()
        pool.submit(other, 0).result()
    seen = [pool.submit(job, 0).result()]  # the worker keeps this copy of job (OFFSET 1)
    OFFSET = 100
    seen.append(pool.submit(other, 1).result())  # brings OFFSET 100 into the worker
    OFFSET = 1
    seen.append(pool.submit(job, 0).result())  # the kept copy of job runs: with OFFSET 1
    print(seen)
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_a_kept_function_sees_the_globals_of_its_own_submit(method: str, tmp_path: Path) -> None:
    """Globals a job reads are the values they had at its submit, even when the worker runs a
    copy of the function it kept and another function brought other values since."""
    done = run_child(["-c", GLOBALS_AT_SUBMIT.replace("METHOD", repr(method))], None, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[1, 100, 1]"]


# A script's module-level state, as users of the stdlib pools keep per-worker state: the worker's
# own changes (a dict its initializer filled, a counter a job bumps, a name rebound with
# `global`) stay; a change the script makes between two submits reaches the next job.
SCRIPT_STATE = """
import pickle
import jobpool
from jobpool._serialization import dumps

state = {}
seen = []
conn = None
OFFSET = 1

def init():
    global conn
    state["v"] = 7
    conn = "connected"

def job(_):
    return state.get("v")

def bump(_):
    seen.append(len(seen))
    return state.get("v"), list(seen), conn

def add(x):
    return x + OFFSET

pool = jobpool.Pool(1, backend="process", start_method=METHOD, initializer=init)
print("INIT", pool.submit(job, 0).result())
print("KEPT", [pool.submit(bump, 0).result() for _ in range(2)])
OFFSET = 100
print("REBOUND", pool.submit(add, 1).result())
state["v"] = 8
print("MUTATED", pool.submit(job, 0).result(), list(pool.map(job, range(2))))
print("KEPT", pool.submit(bump, 0).result())
seen.append("script")
print("MUTATED", pool.submit(bump, 0).result())
conn = "script's"
print("REBOUND", pool.submit(bump, 0).result())
HANDLERS = {"double": lambda x: 2 * x}  # pickled by cloudpickle, compared by its pickle
BIG = list(range(100_000))  # its pickle is over 64 KiB: not compared, written with each new copy

def use_handlers(x):
    HANDLERS.setdefault("calls", 0)
    HANDLERS["calls"] += 1
    return HANDLERS["double"](x), HANDLERS["calls"]

def grow_big(_):
    BIG.append(-1)
    return len(BIG)

def big_len(_):
    return len(BIG)

print("CLOUD", [pool.submit(use_handlers, 3).result() for _ in range(2)])
# A large function is kept by the worker and rerun without a new copy of BIG; another function
# brings its own copy, which replaces the worker's.
grown = [pool.submit(grow_big, 0).result() for _ in range(2)]
print("LARGE", grown, pool.submit(big_len, 0).result())
pool.shutdown()
before = state
pickle.loads(dumps(job, "fn"))  # unpickled where it was made: writes nothing
print("SAME", state is before)
"""

SCRIPT_STATE_EXPECTED = [
    "INIT 7",
    "KEPT [(7, [0], 'connected'), (7, [0, 1], 'connected')]",
    "REBOUND 101",
    "MUTATED 8 [8, 8]",
    "KEPT (8, [0, 1, 2], 'connected')",
    "MUTATED (8, ['script', 1], 'connected')",
    "REBOUND (8, ['script', 1, 2], \"script's\")",
    "CLOUD [(6, 1), (6, 2)]",
    "LARGE [100001, 100002] 100000",
    "SAME True",
]


@pytest.mark.parametrize("method", START_METHODS)
def test_a_workers_own_state_stays_and_the_scripts_changes_arrive(
    method: str, tmp_path: Path
) -> None:
    path = tmp_path / "state.py"
    path.write_text(SCRIPT_STATE.replace("METHOD", repr(method)))
    done = run_child([str(path)], None, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == SCRIPT_STATE_EXPECTED, done.stderr
