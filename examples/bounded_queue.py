"""Backpressure: a fast producer, slow workers, and a queue that never grows past max_pending.

``submit`` waits while ``max_pending`` jobs are queued, so the producer runs only as fast as the
workers drain the queue and memory stays flat. ``submit_nowait`` raises ``QueueFull`` instead of
waiting, for callers that would rather shed load or do something else.

Run: python examples/bounded_queue.py
"""

from __future__ import annotations

import time

from jobpool import Pool, QueueFull


def handle(item: int) -> int:
    time.sleep(0.01)  # stands for a network call
    return item * 2


def main() -> None:
    with Pool(4, max_pending=8) as pool:
        # 1. submit() blocks while 8 jobs wait: the queue depth never goes past 8.
        deepest = 0
        futures = []
        start = time.perf_counter()
        for item in range(200):
            futures.append(pool.submit(handle, item))
            deepest = max(deepest, pool.stats().pending)
        produced = time.perf_counter() - start
        total = sum(f.result() for f in futures)
        print(f"submitted 200 jobs in {produced:.2f} s; deepest queue: {deepest} (max_pending=8)")
        print(f"sum of results: {total}")

        # 2. submit_nowait() refuses instead of waiting.
        accepted = refused = 0
        for item in range(100):
            try:
                pool.submit_nowait(handle, item)
                accepted += 1
            except QueueFull:
                refused += 1  # a real service would answer "busy, retry later"
        print(f"submit_nowait: {accepted} accepted, {refused} refused with QueueFull")
        print(pool.stats())


if __name__ == "__main__":
    main()
