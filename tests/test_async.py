"""asyncio: ``await pool.run(...)`` and ``async for ... in pool.amap(...)`` on a real event loop.

Jobs that must wait report to a :class:`jobs.StartGate` and block until the test releases
them, so no test depends on timing. Blocking calls of the test itself (waiting at the gate) run
in a thread.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, Callable

import pytest

import jobs
from conftest import WAIT, wait_until
from jobpool import Pool, _platform


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking test helper without blocking the loop."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def test_run_returns_the_result(make_pool: Callable[..., Pool], backend: str) -> None:
    pool = make_pool(backend)

    async def main() -> tuple[Any, ...]:
        return (
            await pool.run(jobs.add, 1, 2),
            await pool.run(jobs.echo_kwargs, 1, key="v"),
            await pool.options(timeout=WAIT).run(jobs.square, 5),
        )

    assert asyncio.run(main()) == (3, ((1,), {"key": "v"}), 25)


def test_run_raises_the_job_exception(make_pool: Callable[..., Pool], backend: str) -> None:
    pool = make_pool(backend)

    async def main() -> None:
        with pytest.raises(ValueError, match="boom"):
            await pool.run(jobs.raise_value_error, "boom")

    asyncio.run(main())


def test_amap_ordered(make_pool: Callable[..., Pool], backend: str) -> None:
    pool = make_pool(backend)

    async def main() -> list[int]:
        return [r async for r in pool.amap(jobs.square, range(50))]

    assert asyncio.run(main()) == [x * x for x in range(50)]


def test_amap_unordered_yields_in_completion_order(
    make_pool: Callable[..., Pool], backend: str
) -> None:
    pool = make_pool(backend, workers=2)
    with jobs.StartGate() as gate:
        addresses = [gate.address, gate.address]

        async def main() -> list[Any]:
            results = pool.amap(
                jobs.gate_job,
                addresses,
                ["held", "free"],
                ["first in", "second in"],
                [True, False],
                ordered=False,
                chunksize=1,
            )
            got = [await results.__anext__()]  # "held" cannot finish before its release
            await in_thread(gate.wait_for, "held")
            gate.release("held")
            got += [r async for r in results]
            return got

        assert asyncio.run(main()) == ["second in", "first in"]


def test_amap_ordered_waits_for_the_head(make_pool: Callable[..., Pool], backend: str) -> None:
    pool = make_pool(backend, workers=2)
    with jobs.StartGate() as gate:

        async def main() -> list[Any]:
            results = pool.amap(
                jobs.gate_job,
                [gate.address] * 2,
                ["held", "free"],
                [1, 2],
                [True, False],
                chunksize=1,
            )
            first = asyncio.ensure_future(results.__anext__())  # amap starts when iterated
            await in_thread(gate.wait_for, "free")  # the second item has run...
            await in_thread(gate.wait_for, "held")
            assert not first.done()
            gate.release("held")  # ...but comes after the first
            return [await first] + [r async for r in results]

        assert asyncio.run(main()) == [1, 2]


def test_amap_reads_async_iterables(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool("thread")

    async def numbers(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def main() -> tuple[list[int], list[int]]:
        one = [r async for r in pool.amap(jobs.square, numbers(20))]
        two = [r async for r in pool.amap(jobs.add, numbers(5), range(100))]
        return one, two

    assert asyncio.run(main()) == ([x * x for x in range(20)], [0, 2, 4, 6, 8])


def test_amap_callbacks_run_in_the_loop(make_pool: Callable[..., Pool], backend: str) -> None:
    pool = make_pool(backend)
    seen: list[tuple[str, Any, int, int]] = []

    def record(kind: str) -> Callable[[Any], None]:
        return lambda v: seen.append((kind, v, os.getpid(), threading.get_ident()))

    class Bar:
        n = 0

        def update(self, n: int = 1) -> None:
            self.n += n

    bar = Bar()

    async def main() -> list[int]:
        return [
            r
            async for r in pool.amap(
                jobs.fail_on_odd,
                range(8),
                on_result=record("ok"),
                on_error=record("err"),
                progress=bar,
            )
        ]

    assert asyncio.run(main()) == [0, 2, 4, 6]
    assert len(seen) == 8 and bar.n == 8
    assert sorted(v for k, v, _, _ in seen if k == "ok") == [0, 2, 4, 6]
    assert sorted(str(v) for k, v, _, _ in seen if k == "err") == [
        f"odd: {i}" for i in (1, 3, 5, 7)
    ]
    assert {(pid, tid) for _, _, pid, tid in seen} == {(os.getpid(), threading.get_ident())}


def test_amap_raises_a_failed_item_without_on_error(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool("thread")

    async def main() -> list[int]:
        got = []
        with pytest.raises(ValueError, match="odd: 1"):
            async for r in pool.amap(jobs.fail_on_odd, range(4), chunksize=1):
                got.append(r)
        return got

    assert asyncio.run(main()) == [0]


def test_cancelling_run_cancels_a_job_not_started(
    make_pool: Callable[..., Pool], backend: str, tmp_path: Any
) -> None:
    pool = make_pool(backend, workers=1)
    with jobs.StartGate() as gate:
        blocker = pool.submit(jobs.gate_job, gate.address, "blocker")
        gate.wait_for("blocker")  # the only worker is busy: the next job waits in the queue

        async def main() -> None:
            task = asyncio.ensure_future(pool.run(jobs.mark_run, str(tmp_path), "victim"))
            await asyncio.sleep(0)  # the task's first step queues the job
            assert pool.stats().pending == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        gate.release("blocker")
        assert blocker.result(WAIT) is None
    pool.shutdown(wait=True)
    assert jobs.runs_in(str(tmp_path)) == {}
    assert pool.stats().cancelled == 1


def test_full_queue_does_not_block_the_loop(make_pool: Callable[..., Pool], backend: str) -> None:
    pool = make_pool(backend, workers=1, max_pending=1)
    with jobs.StartGate() as gate:
        # If run() blocked the loop, nothing below could release the blocker: this watchdog
        # would, and the test fails on its flag instead of hanging.
        watchdog = threading.Timer(WAIT, gate.release_all)
        watchdog.start()
        try:
            blocker = pool.submit(jobs.gate_job, gate.address, "blocker")
            gate.wait_for("blocker")
            filler = pool.submit(jobs.square, 3)  # takes the only queue slot

            async def main() -> int:
                other_ran = asyncio.Event()

                async def other() -> None:
                    other_ran.set()

                job = asyncio.ensure_future(pool.run(jobs.square, 4))
                other_task = asyncio.ensure_future(other())
                await other_ran.wait()  # another coroutine ran while run() waits for a slot
                assert watchdog.is_alive() and not job.done()
                gate.release("blocker")  # frees the worker, then the slot
                await other_task
                return await asyncio.wait_for(job, WAIT)

            assert asyncio.run(main()) == 16
            assert filler.result(WAIT) == 9 and blocker.result(WAIT) is None
        finally:
            watchdog.cancel()


def test_cancel_while_waiting_for_a_slot(
    make_pool: Callable[..., Pool], backend: str, tmp_path: Any
) -> None:
    pool = make_pool(backend, workers=1, max_pending=1)
    with jobs.StartGate() as gate:
        blocker = pool.submit(jobs.gate_job, gate.address, "blocker")
        gate.wait_for("blocker")
        filler = pool.submit(jobs.gate_job, gate.address, "filler")  # the only slot

        async def main() -> None:
            task = asyncio.ensure_future(pool.run(jobs.mark_run, str(tmp_path), "victim"))
            await asyncio.sleep(0)  # queue full: the task waits for a slot in the helper
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        gate.release("blocker")
        gate.wait_for("filler")  # the slot is free now: the helper queues the job...
        pool._intake.slot_waiter().submit(lambda: None).result(WAIT)  # ...and cancels it
        gate.release("filler")
        assert blocker.result(WAIT) is None and filler.result(WAIT) is None
    pool.shutdown(wait=True)
    assert jobs.runs_in(str(tmp_path)) == {}


def test_the_slot_waiting_thread_belongs_to_its_pool(
    make_pool: Callable[..., Pool], backend: str
) -> None:
    """The helper thread that waits for queue slots for coroutines ends with its pool."""
    pool = make_pool(backend, workers=1, max_pending=1)
    with jobs.StartGate() as gate:
        blocker = pool.submit(jobs.gate_job, gate.address, "blocker")
        gate.wait_for("blocker")
        pool.submit(jobs.gate_job, gate.address, "filler", hold=False)  # the only slot

        async def main() -> Any:
            return await pool.run(jobs.square, 4)  # waits for a slot in the helper thread

        async def release_then_run() -> Any:
            job = asyncio.ensure_future(main())
            await asyncio.sleep(0)
            gate.release("blocker")
            return await job

        assert asyncio.run(release_then_run()) == 16
        assert blocker.result(WAIT) is None
    helpers = [t for t in threading.enumerate() if t.name.startswith("jobpool-async-submit")]
    assert helpers, "the coroutine should have waited in the helper thread"
    pool.shutdown(wait=True)
    for thread in helpers:
        thread.join(WAIT)
        assert not thread.is_alive()


def test_amap_backpressure_with_a_small_queue(make_pool: Callable[..., Pool], backend: str) -> None:
    pool = make_pool(backend, workers=2, max_pending=1)

    async def main() -> list[int]:
        return [r async for r in pool.amap(jobs.square, range(40), chunksize=1)]

    assert asyncio.run(main()) == [x * x for x in range(40)]


def test_breaking_out_of_amap_cancels_the_rest(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool("thread", workers=1)
    with jobs.StartGate() as gate:

        async def main() -> None:
            results = pool.amap(
                jobs.gate_job,
                [gate.address] * 50,
                [str(i) for i in range(50)],
                range(50),
                chunksize=1,
                buffersize=3,
            )
            first = asyncio.ensure_future(results.__anext__())
            await in_thread(gate.wait_for, "0")
            gate.release("0")
            assert await first == 0
            await results.aclose()  # cancels the chunks still waiting

        asyncio.run(main())
        gate.release_all()
    pool.shutdown(wait=True)
    stats = pool.stats()
    assert stats.submitted <= 4  # the window, not the whole input
    assert stats.cancelled >= 1


def test_amap_checks_arguments_at_call_time(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool("thread")
    with pytest.raises(TypeError, match="callable"):
        pool.amap(42, [1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunksize"):
        pool.amap(jobs.square, [1], chunksize=0)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.amap(jobs.square, [1])


# --- cancellation that stops the work (issue 26, item 3) ------------------------------------------
#
# Cancelling the task that awaits run() (or iterates amap()) stops a job that already runs, as
# Pool.kill does: on the process backend its worker is killed with every program it started,
# and replaced. The task's cancellation goes on only once that is done, so the tests check
# right after `await task` raises, without waiting. options(on_cancel="leave") lets it finish.

# Spawn repeats forkserver's scenarios at several times the cost: run by CI (see conftest.py).
METHODS = [
    pytest.param(m, marks=[pytest.mark.slow] if m == "spawn" else [])
    for m in ("forkserver", "fork", "spawn")
]
# Without the /proc walk and the subreaper (JOBPOOL_PORTABLE, macOS) a job is stopped through
# its worker's process group, which a program in a session of its own has left (see
# test_process_tree and docs/usage/programs.md).
TREE_WALK = _platform.PROC and _platform.SUBREAPER
SHAPES = ("sleep", "grandchild", "setsid") if TREE_WALK else ("sleep", "grandchild")


@pytest.fixture
def programs() -> Iterator[Any]:
    from proctree import marked_programs

    with marked_programs() as marked:
        yield marked


def reported(gate: jobs.StartGate) -> tuple[int, set[int]]:
    """The worker pid and the program pids of the next job that reached the gate."""
    tag, pid = gate.wait(WAIT)
    return pid, {int(p) for p in tag.split(":", 1)[1].split(",") if p}


def assert_all_gone(programs: Any, pids: set[int]) -> None:
    from proctree import alive, wait_exited

    if not TREE_WALK:  # one SIGKILL to the group: the kernel may still be removing one
        wait_exited(pids | programs.running(), WAIT)
    assert not {pid for pid in pids if alive(pid)}, "a program the job started still runs"
    assert not programs.running(), "a process the job's programs started still runs"


def counted(pool: Pool, **counts: int) -> None:
    """Wait until the pool's counts are these: a future resolves before its pool counts it, and
    a killed worker's replacement is counted once it exited."""
    wait_until(
        lambda: all(getattr(pool.stats(), name) == n for name, n in counts.items()),
        f"the pool's counts to be {counts} (they are {pool.stats()})",
    )


async def queued(pool: Pool, count: int) -> None:
    """Let the loop run until ``count`` jobs were submitted (each run() queues in a step or two)."""
    for _ in range(1000):
        if pool.stats().submitted >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{count} jobs were not submitted")


@pytest.mark.parametrize("method", METHODS)
def test_cancelling_run_stops_the_running_process_job_and_its_programs(
    method: str, programs: Any, gate: jobs.StartGate
) -> None:
    with Pool(1, backend="process", start_method=method) as pool:

        async def main() -> tuple[int, set[int]]:
            task = asyncio.ensure_future(
                pool.run(jobs.programs_at_gate, gate.address, "job", SHAPES, programs.env)
            )
            worker, pids = await in_thread(reported, gate)
            assert await in_thread(programs.wait_running, pids)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert_all_gone(programs, pids)  # gone before the cancellation went on
            return worker, pids

        worker, _ = asyncio.run(main())
        assert pool.submit(jobs.get_pid).result(WAIT) != worker  # a new worker serves
        counted(pool, worker_restarts=1, failed=1, done=1)


def test_a_timeout_through_wait_for_stops_the_job(programs: Any, gate: jobs.StartGate) -> None:
    with Pool(1, backend="process") as pool:

        async def main() -> set[int]:
            waiting = asyncio.ensure_future(
                asyncio.wait_for(
                    pool.run(jobs.programs_at_gate, gate.address, "job", SHAPES, programs.env),
                    timeout=0.001,
                )
            )
            await queued(pool, 1)
            # The loop is blocked until the job runs: its time runs out only then.
            _, pids = reported(gate)
            assert programs.wait_running(pids)
            with pytest.raises(asyncio.TimeoutError):
                await waiting
            assert_all_gone(programs, pids)
            return pids

        asyncio.run(main())
        counted(pool, worker_restarts=1)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout and TaskGroup: 3.11+")
def test_asyncio_timeout_and_a_failing_task_group_stop_the_job(
    programs: Any, gate: jobs.StartGate
) -> None:
    with Pool(1, backend="process") as pool:

        async def timeout() -> None:
            loop = asyncio.get_running_loop()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(None) as deadline:  # type: ignore[attr-defined]
                    task = asyncio.ensure_future(
                        pool.run(jobs.programs_at_gate, gate.address, "a", SHAPES, programs.env)
                    )
                    _, pids = await in_thread(reported, gate)
                    deadline.reschedule(loop.time())
                    await task
            assert_all_gone(programs, pids)

        async def task_group() -> None:
            started: asyncio.Future[set[int]] = asyncio.get_running_loop().create_future()

            async def sibling() -> None:
                started.set_result((await in_thread(reported, gate))[1])
                raise RuntimeError("a sibling failed")

            with pytest.raises(BaseException) as raised:
                async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
                    group.create_task(
                        pool.run(jobs.programs_at_gate, gate.address, "b", SHAPES, programs.env)
                    )
                    group.create_task(sibling())
            assert "a sibling failed" in repr(raised.value.exceptions)  # type: ignore[attr-defined]
            assert_all_gone(programs, started.result())

        asyncio.run(timeout())
        asyncio.run(task_group())
        counted(pool, worker_restarts=2)


def test_on_cancel_leave_lets_a_running_job_finish(
    make_pool: Callable[..., Pool], backend: str, gate: jobs.StartGate
) -> None:
    pool = make_pool(backend, 1)

    async def main() -> int:
        task = asyncio.ensure_future(
            pool.options(on_cancel="leave").run(jobs.gate_then_value, gate.address, "job", 7)
        )
        _, pid = await in_thread(gate.wait, WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pid

    pid = asyncio.run(main())
    assert gate.inside == 1  # still running
    gate.release("job")
    wait_until(lambda: pool.stats().done == 1, "the job to finish")
    assert pool.stats().worker_restarts == 0
    if backend != "thread":
        assert pool.submit(jobs.get_pid).result(WAIT) == pid  # the same worker


def test_cancelling_run_on_threads_abandons_the_thread(
    make_pool: Callable[..., Pool], gate: jobs.StartGate
) -> None:
    """A thread cannot be stopped: its job's future fails and a new thread takes its place."""
    pool = make_pool("thread", 1)

    async def main() -> None:
        task = asyncio.ensure_future(pool.run(jobs.gate_job, gate.address, "job"))
        await in_thread(gate.wait_for, "job")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    counted(pool, worker_restarts=1, failed=1)
    assert pool.submit(jobs.square, 3).result(WAIT) == 9  # served while the old one runs on
    gate.release("job")


def test_cancelling_run_on_dask_stops_a_job_not_started_on_its_worker(
    make_pool: Callable[..., Pool], gate: jobs.StartGate, tmp_path: Any
) -> None:
    pool = make_pool("dask", 1)
    assert [f.result(WAIT) for f in [pool.submit(jobs.square, i) for i in range(20)]]
    blocker = pool.submit(jobs.gate_job, gate.address, "blocker")  # the only slot
    gate.wait_for("blocker")

    async def main() -> None:
        task = asyncio.ensure_future(pool.run(jobs.mark_run, str(tmp_path), "staged"))
        # Its jobs are short, so the worker holds this one behind the blocker: sent, not started.
        await in_thread(wait_until, lambda: pool.stats().running == 2, "the job to be sent")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    gate.release("blocker")
    assert blocker.result(WAIT) is None
    pool.shutdown(wait=True)
    assert jobs.runs_in(str(tmp_path)) == {}  # it never ran
    assert pool.stats().failed == 1


@pytest.mark.parametrize("close", ["aclose", "cancel"])
def test_amap_stops_its_running_chunks_when_closed_or_cancelled(
    close: str, programs: Any, gate: jobs.StartGate
) -> None:
    with Pool(2, backend="process") as pool:

        async def main() -> set[int]:
            results = pool.amap(
                jobs.programs_at_gate,
                [gate.address] * 3,
                ["first", "held1", "held2"],
                [(), SHAPES, SHAPES],
                [programs.env] * 3,
                [False, True, True],
                chunksize=1,
            )
            assert await results.__anext__() == []  # type: ignore[attr-defined]
            pids: set[int] = set()
            for _ in range(3):  # "first", then both held jobs with their programs
                pids |= (await in_thread(reported, gate))[1]
            if close == "aclose":
                await results.aclose()  # type: ignore[attr-defined]
            else:
                second = asyncio.ensure_future(results.__anext__())  # type: ignore[attr-defined]
                await asyncio.sleep(0)  # it waits for "held1"
                second.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await second
            assert_all_gone(programs, pids)
            return pids

        assert len(asyncio.run(main())) >= 2 * len(SHAPES)  # a grandchild reports two
        counted(pool, worker_restarts=2)
