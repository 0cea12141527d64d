"""Bound methods, lambdas and closures run on worker processes; unpicklable arguments are named.

jobpool serializes each job with the standard ``pickle`` first and falls back to ``cloudpickle``
when pickle refuses (lambdas, closures, local classes) or when the pickle would name ``__main__``,
which a fresh worker process cannot import. What neither can serialize raises
``SerializationError`` at ``submit``, with ``path`` naming the part that failed.

Run: python examples/pickling_bound_methods.py
"""

from __future__ import annotations

import threading

from jobpool import Pool, SerializationError


class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def scale(self, x: int) -> int:
        return x * self.factor


class Client:
    """Holds a lock, like many clients of databases and network services do."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.url = "https://example.invalid"


def make_adder(n: int):
    def add(x: int) -> int:
        return x + n  # a closure over n

    return add


def fetch(client: Client, key: str) -> str:
    return f"{client.url}/{key}"


def main() -> None:
    with Pool(2, backend="process") as pool:
        print("bound method:", list(pool.map(Scaler(10).scale, range(5))))
        print("lambda:      ", list(pool.map(lambda x: x**2, range(5))))
        print("closure:     ", pool.submit(make_adder(100), 1).result())

        try:
            pool.submit(fetch, Client(), "a")
        except SerializationError as exc:
            print(f"SerializationError, path={exc.path!r}:")
            print(f"  {exc}")

        # The fix: build the resource inside the job (or in an initializer), pass plain data.
        print("fixed:       ", pool.submit(lambda key: fetch(Client(), key), "a").result())
        print(pool.stats())


if __name__ == "__main__":
    main()
