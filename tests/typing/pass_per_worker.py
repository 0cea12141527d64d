"""Must pass mypy --strict: a per_worker handle is typed as the object its factory makes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager

from typing_extensions import assert_type

from jobpool import Pool, per_worker


class Store:
    def __init__(self, path: str, *, timeout: float = 1.0) -> None:
        self.path = path

    def put(self, key: str, value: int) -> bool:
        return bool(key) and value > 0


def open_store(path: str) -> Store:
    return Store(path)


@contextmanager
def session(url: str) -> Iterator[Store]:
    yield Store(url)


def check(pool: Pool) -> None:
    store = per_worker(Store, "db", timeout=2.0)
    assert_type(store, Store)
    assert_type(per_worker(open_store, "db"), Store)
    assert_type(per_worker(session, "http://x"), Store)  # what the context manager yields
    assert_type(per_worker(sqlite3.connect, ":memory:"), sqlite3.Connection)
    assert_type(store.put("k", 1), bool)
    assert_type(pool.submit(store.put, "k", 1), Future[bool])
    assert_type(pool.map(store.put, ["k"], [1]), Iterator[bool])
