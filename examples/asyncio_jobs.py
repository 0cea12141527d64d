"""jobpool from asyncio: await one job, stream many, and keep the event loop free meanwhile.

CPU-bound work runs in worker processes; the loop keeps serving other coroutines (here, a
heartbeat) while it waits. Runs in a few seconds.
"""

from __future__ import annotations

import asyncio

from jobpool import Pool


def crunch(n: int) -> int:
    """Pure-Python arithmetic: holds the GIL, so it belongs in a process."""
    return sum(i * i % 7 for i in range(n))


async def heartbeat(stop: asyncio.Event) -> int:
    beats = 0
    while not stop.is_set():
        beats += 1
        await asyncio.sleep(0.01)
    return beats


async def main() -> None:
    with Pool(2, backend="process", max_pending=4) as pool:
        stop = asyncio.Event()
        beats = asyncio.ensure_future(heartbeat(stop))

        # One job: await it like any coroutine.
        print("one job:", await pool.run(crunch, 200_000))

        # Many jobs: results as they complete; a full queue suspends this coroutine only.
        total = 0
        async for value in pool.amap(crunch, [50_000] * 40, ordered=False):
            total += value
        print("40 jobs, total:", total)

        # Cancelling the awaiting task cancels a job that has not started: with both workers
        # busy, the third job waits in the queue, and cancel() takes it out.
        busy = [asyncio.ensure_future(pool.run(crunch, 1_000_000)) for _ in range(2)]
        await asyncio.sleep(0)
        waiting = asyncio.ensure_future(pool.run(crunch, 1_000_000))
        await asyncio.sleep(0)
        waiting.cancel()
        try:
            await waiting
        except asyncio.CancelledError:
            print("cancelled the waiting job before it started")
        await asyncio.gather(*busy)

        stop.set()
        print("the loop stayed free: heartbeat ran", await beats, "times")


if __name__ == "__main__":
    asyncio.run(main())
