"""The public names are pinned: adding or removing one is a deliberate change."""

from __future__ import annotations

import pickle

import jobpool


def test_public_names() -> None:
    expected = {
        "DependencyError",
        "InitializerError",
        "JobKilledError",
        "JobOptions",
        "JobTimeoutError",
        "JobpoolError",
        "MemoryLimitError",
        "PerWorkerError",
        "Pool",
        "PoolStats",
        "QueueFull",
        "RemoteError",
        "RemoteTraceback",
        "ResultLoadError",
        "SchedulerLostError",
        "SerializationError",
        "WorkerCrashedError",
        "per_worker",
    }
    assert set(jobpool.__all__) == expected, "a public name was added or removed"
    assert len(jobpool.__all__) == len(expected), "a public name is listed twice"
    for name in jobpool.__all__:
        assert getattr(jobpool, name).__module__ == "jobpool"


def test_errors_subclass_what_users_already_catch() -> None:
    from concurrent.futures import BrokenExecutor

    assert issubclass(jobpool.JobTimeoutError, TimeoutError)
    assert issubclass(jobpool.MemoryLimitError, MemoryError)
    assert issubclass(jobpool.SerializationError, pickle.PicklingError)
    assert issubclass(jobpool.ResultLoadError, jobpool.SerializationError)
    assert issubclass(jobpool.InitializerError, BrokenExecutor)
    assert issubclass(jobpool.SchedulerLostError, BrokenExecutor)
    for name in jobpool.__all__:
        obj = getattr(jobpool, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, Exception)
            and obj is not jobpool.RemoteTraceback
        ):
            assert issubclass(obj, jobpool.JobpoolError)


def test_errors_survive_pickling() -> None:
    errors = [
        jobpool.WorkerCrashedError(12, -9),
        jobpool.JobTimeoutError(1.5),
        jobpool.MemoryLimitError(100 << 20, 101 << 20, "sampled every 10 ms"),
        jobpool.SerializationError("cannot", "args[0]"),
        jobpool.RemoteError("mod.Type", "message"),
        jobpool.ResultLoadError("cannot load", "the job's result", "mod.Type"),
        jobpool.SchedulerLostError("lost the connection", "tcp://10.0.0.5:8786"),
        jobpool.DependencyError("this job's input args[1] failed", "args[1]"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert vars(copy) == vars(error)


def test_the_version_is_written_in_one_place() -> None:
    """pyproject.toml reads it from jobpool.__version__; nothing else spells it out."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    pyproject = (root / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.MULTILINE)
    assert 'version = { attr = "jobpool.__version__" }' in pyproject
    assert not re.search(r"^version\s*=\s*\"", pyproject, re.MULTILINE)  # no literal
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", jobpool.__version__)
    assert "## Unreleased" in (root / "CHANGELOG.md").read_text()
