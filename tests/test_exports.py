"""The public names are pinned: adding or removing one is a deliberate change."""

from __future__ import annotations

import pickle

import jobpool


def test_public_names() -> None:
    expected = {
        "InitializerError",
        "JobKilledError",
        "JobOptions",
        "JobTimeoutError",
        "JobpoolError",
        "Pool",
        "PoolStats",
        "QueueFull",
        "RemoteError",
        "RemoteTraceback",
        "SchedulerLostError",
        "SerializationError",
        "WorkerCrashedError",
    }
    assert expected <= set(jobpool.__all__)
    for name in jobpool.__all__:
        assert getattr(jobpool, name).__module__ == "jobpool"


def test_errors_subclass_what_users_already_catch() -> None:
    from concurrent.futures import BrokenExecutor

    assert issubclass(jobpool.JobTimeoutError, TimeoutError)
    assert issubclass(jobpool.SerializationError, pickle.PicklingError)
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
        jobpool.SerializationError("cannot", "args[0]"),
        jobpool.RemoteError("mod.Type", "message"),
        jobpool.SchedulerLostError("lost the connection", "tcp://10.0.0.5:8786"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
