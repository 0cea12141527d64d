"""Call methods of an object that cannot be pickled: one instance per worker with per_worker.

``WordIndex`` holds an SQLite connection and a lock, so neither it nor its bound methods can be
sent to a worker process: submitting ``WordIndex(path).add`` raises ``SerializationError``, and
the message points to the fix. ``per_worker(WordIndex, path)`` sends the class and the path
instead; each worker process builds its own ``WordIndex`` the first time a job needs it, reuses it
for every later job, and closes it when the pool shuts down.

Run: python examples/per_worker_database.py
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import threading
from collections import Counter

from jobpool import Pool, SerializationError, per_worker

TEXT = """the quick brown fox jumps over the lazy dog
a journey of a thousand miles begins with a single step
to be or not to be that is the question
all that glitters is not gold""".splitlines()


def say(line: str) -> None:
    """Print from a worker: one write per line, so lines of two workers never mix."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class WordIndex:
    """Counts words into a shared SQLite file over its own connection (not picklable)."""

    def __init__(self, path: str) -> None:
        self.connection = sqlite3.connect(path, timeout=30)
        self.lock = threading.Lock()
        say(f"  process {os.getpid()}: connected to {os.path.basename(path)}")

    def add(self, line: str) -> tuple[int, int]:
        words = line.split()
        with self.lock, self.connection:  # one transaction per job
            self.connection.executemany(
                "INSERT INTO words (word, worker) VALUES (?, ?)", [(w, os.getpid()) for w in words]
            )
        return os.getpid(), len(words)

    def close(self) -> None:
        say(f"  process {os.getpid()}: closing its connection")
        self.connection.close()


def create_database(path: str) -> None:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE words (word TEXT, worker INTEGER)")
    connection.commit()
    connection.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "words.db")
        create_database(path)

        with Pool(2, backend="process") as pool:
            index = WordIndex(path)
            try:
                pool.submit(index.add, TEXT[0])
            except SerializationError as exc:
                print(f"SerializationError at {exc.path}:\n  {exc}\n")
            index.close()

            words = per_worker(WordIndex, path)  # nothing is built here
            print(f"handle: {words!r}")
            done = list(pool.map(words.add, TEXT * 25))
            print(f"{len(done)} jobs, {sum(n for _, n in done)} words, by workers", end=" ")
            print(sorted(Counter(pid for pid, _ in done).items()))
        # The pool has shut down: each worker closed its connection on the way out.

        connection = sqlite3.connect(path)
        top = connection.execute(
            "SELECT word, COUNT(*) FROM words GROUP BY word ORDER BY COUNT(*) DESC, word LIMIT 3"
        ).fetchall()
        connection.close()
        print("most common:", top)


if __name__ == "__main__":
    main()
