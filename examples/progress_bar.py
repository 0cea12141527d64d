"""A progress bar over pool.map, callbacks for your own UI, and a bar over submitted futures.

Needs tqdm, the progress extra: pip install "jobpool[progress]" (from a checkout of jobpool:
pip install ".[progress]"); without it, the first map says so. Runs in about a second.
"""

from __future__ import annotations

import time

from jobpool import Pool


def fetch(page: int) -> str:
    """Stands for a download: waits a little, fails on page 13."""
    time.sleep(0.01)
    if page == 13:
        raise ConnectionError(f"page {page}: connection reset")
    return f"page {page}: ok"


def main() -> None:
    with Pool(8) as pool:
        # 1. A bar: progress=True (a tqdm bar, total taken from len(pages)).
        pages = list(range(1, 41))
        failed: list[BaseException] = []
        results = list(pool.map(fetch, pages, progress=True, on_error=failed.append))
        print(f"{len(results)} pages fetched, {len(failed)} failed: {failed[0]}")

        # 2. Callbacks only, for your own UI: they run here, in this thread, once per item.
        done = 0

        def show(result: str) -> None:
            nonlocal done
            done += 1

        list(pool.map(fetch, range(100, 120), on_result=show))
        print(f"on_result was called {done} times")

        # 3. A bar over futures from submit(), in completion order, with tqdm options.
        futures = [pool.submit(fetch, page) for page in range(50, 70)]
        for future in pool.as_completed(futures, progress={"desc": "submitted", "unit": "page"}):
            future.result()


if __name__ == "__main__":
    main()
