"""The test run's own guarantees, each checked in a pytest run of its own.

A guard that silently stopped working would let every test it protects pass: an exception in a
helper thread or in a thread of the pool, a hang, a declared test dependency that is missing.
Each case writes a small test file, runs pytest on it in a child interpreter with this project's
configuration (``pyproject.toml``) and ``conftest.py`` as a plugin, and checks that it fails, and
for the reason named; a control file shows that the same run passes when nothing is wrong.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from conftest import WAIT, join_or_fail, wait_blocked_in, within

TESTS_DIR = Path(__file__).resolve().parent
PYPROJECT = TESTS_DIR.parent / "pyproject.toml"


def run_pytest(
    tmp_path: Path, source: str, *options: str, config: Path = PYPROJECT
) -> subprocess.CompletedProcess[str]:
    """Run pytest on ``source`` (a test module) with ``config`` and this suite's conftest."""
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(textwrap.dedent(source))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "conftest",
            "-c",
            str(config),
            *options,
            str(test_file),
        ],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def assert_outcome(run: subprocess.CompletedProcess[str], summary: str, *reasons: str) -> None:
    output = run.stdout + run.stderr
    assert summary in output, output
    for reason in reasons:
        assert reason in output, output


def test_a_helper_thread_that_raises_fails_its_test(tmp_path: Path) -> None:
    run = run_pytest(
        tmp_path,
        """
        import threading

        def test_helper_thread_raises():
            thread = threading.Thread(target=lambda: 1 / 0)
            thread.start()
            thread.join(60)

        def test_helper_thread_returns():
            thread = threading.Thread(target=lambda: 1 / 1)
            thread.start()
            thread.join(60)
        """,
    )
    assert run.returncode == 1
    assert_outcome(run, "1 failed, 1 passed", "FAILED", "test_helper_thread_raises", "ZeroDivision")


def test_a_pool_thread_that_dies_fails_its_test(tmp_path: Path) -> None:
    """A worker thread of the thread backend dies of a bug: its exception reaches the hook."""
    run = run_pytest(
        tmp_path,
        """
        import contextlib
        import threading

        import jobpool._thread
        from conftest import WAIT
        from jobpool import Pool

        def test_pool_thread_dies(monkeypatch):
            @contextlib.contextmanager
            def broken():
                raise RuntimeError("a bug in a pool thread")
                yield

            monkeypatch.setattr(jobpool._thread, "for_worker_thread", broken)
            pool = Pool(1, backend="thread")
            pool.submit(print)
            for thread in threading.enumerate():
                if thread.name.startswith("jobpool-thread"):
                    thread.join(WAIT)
            pool.shutdown(wait=False, cancel_futures=True)

        def test_pool_thread_lives():
            with Pool(1, backend="thread") as pool:
                assert pool.submit(abs, -1).result(WAIT) == 1
        """,
    )
    assert run.returncode == 1
    assert_outcome(run, "1 failed, 1 passed", "test_pool_thread_dies", "a bug in a pool thread")


def test_a_dispatcher_that_dies_fails_its_test(tmp_path: Path) -> None:
    """The process backend's dispatcher catches what kills it (to fail the waiting futures with
    the reason) and logs it: the test in which that happens fails, although it saw the error."""
    run = run_pytest(
        tmp_path,
        """
        import pytest

        import jobpool._process._dispatcher
        from conftest import WAIT
        from jobpool import InitializerError, Pool

        def test_dispatcher_dies(monkeypatch):
            def broken(workers, line):
                raise RuntimeError("a bug in the dispatcher")

            monkeypatch.setattr(jobpool._process._dispatcher, "assign_jobs", broken)
            with Pool(1, backend="process") as pool:
                with pytest.raises(InitializerError, match="a bug in the dispatcher"):
                    pool.submit(abs, -1).result(WAIT)

        def test_dispatcher_lives():
            with Pool(1, backend="process") as pool:
                assert pool.submit(abs, -1).result(WAIT) == 1
        """,
    )
    assert run.returncode == 1
    assert_outcome(
        run,
        "1 failed, 1 passed",
        "test_dispatcher_dies",
        "the pool logged errors",
        "jobpool dispatcher failed",
    )


def test_a_test_that_hangs_fails_instead(tmp_path: Path) -> None:
    run = run_pytest(
        tmp_path,
        """
        import threading

        def test_hangs():
            threading.Event().wait()  # no deadline: only the per-test timeout ends it
        """,
        "-o",
        "timeout=2",
    )
    # The run ends there (pyproject.toml: timeout_method = "thread"), with the stacks of its
    # threads, rather than going on to a teardown that may hang as well.
    assert run.returncode == 1
    assert_outcome(run, "test_hangs", "Timeout", "Stack of MainThread", "threading.Event().wait()")


def test_a_missing_test_dependency_fails_the_run(tmp_path: Path) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text(
        PYPROJECT.read_text().replace(
            'test = [\n    "pytest>=7",',
            'test = [\n    "pytest>=7",\n    "jobpool-no-such-package",',
        )
    )
    assert "jobpool-no-such-package" in config.read_text()
    run = run_pytest(tmp_path, "def test_nothing():\n    pass\n", config=config)
    assert run.returncode == 4  # a usage error: no test ran
    assert_outcome(run, "not installed: jobpool-no-such-package", 'pip install ".[test]"')
    assert "passed" not in run.stdout


# --- the deadline helpers fail, naming what did not happen -------------------------------------


def test_deadline_helpers_fail_with_a_message() -> None:
    never = threading.Event()
    try:
        with pytest.raises(pytest.fail.Exception, match=r"Event.wait\(\) did not return"):
            within(never.wait, seconds=0.01)
        stuck = threading.Thread(target=never.wait, name="stuck")
        stuck.start()
        with pytest.raises(pytest.fail.Exception, match="'stuck' did not end"):
            join_or_fail(stuck, seconds=0.01)
        wait_blocked_in(stuck, "wait")  # it waits on the event
        with pytest.raises(pytest.fail.Exception, match="'stuck' did not wait in reserve"):
            wait_blocked_in(stuck, "reserve", seconds=0.01)  # but not inside reserve()
    finally:
        never.set()
    join_or_fail(stuck)
    with pytest.raises(pytest.fail.Exception, match="'stuck' ended instead of waiting"):
        wait_blocked_in(stuck, "wait")
    with pytest.raises(ZeroDivisionError):  # what the call raises comes back
        within(lambda: 1 / 0)
    assert within(sorted, iter([2, 1])) == [1, 2]


UNSWITCHED_SOURCE = """
import pytest

@pytest.mark.parametrize("backend", ["thread", "process-forkserver", "dask"])
def test_by_backend(backend):
    pass

def test_without_a_backend():
    pass
"""


def test_the_portable_rerun_leaves_out_only_what_no_switch_changes(tmp_path: Path) -> None:
    """CI's second run (``JOBPOOL_PORTABLE=1 ... -m "not unswitched"``) keeps every test that
    may take a process backend's path: a process pool, and a test that names no backend."""
    run = run_pytest(tmp_path, UNSWITCHED_SOURCE, "--collect-only", "-m", "not unswitched")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "test_by_backend[process-forkserver]" in output, output
    assert "test_without_a_backend" in output, output
    assert "[thread]" not in output and "[dask]" not in output, output
    assert "2/4 tests collected (2 deselected)" in output, output
