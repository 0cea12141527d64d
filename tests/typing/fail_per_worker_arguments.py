"""Must fail mypy: per_worker checks the factory's arguments, and calls through the handle."""

from __future__ import annotations

from jobpool import Pool, per_worker


class Store:
    def __init__(self, path: str, *, timeout: float = 1.0) -> None:
        self.path = path

    def put(self, key: str, value: int) -> bool:
        return bool(key) and value > 0


def check(pool: Pool) -> None:
    per_worker(Store, 1)  # E: call-overload
    per_worker(Store, "db", timeout="long")  # E: arg-type
    store = per_worker(Store, "db")
    store.put("k", "v")  # E: arg-type
    store.get("k")  # E: attr-defined
    pool.submit(store.put, "k", "v")  # E: arg-type
    count: int = pool.submit(store.put, "k", 1).result()
    text: str = pool.submit(store.put, "k", 1).result()  # E: assignment
    print(count, text)
