"""A worker's end of the named shared memory (``_named_memory``), in a module of its own.

Why its own module: without memfds (portable mode, macOS) every worker is started with this
end among its arguments, and unpickling it imports the module that defines it. Defined in
``_named_memory``, that import (with ``_shared_memory`` and ``mmap``, about a millisecond) came
with every worker's start; here it is this small module, which the fork server preloads, and
a worker imports the rest at its first large buffer, as it does with memfds.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._named_memory import NamedSegment, ReceivedSegment


class WorkerEnd:
    """A worker's side: its parent's directory and its own token (pickled to the worker)."""

    def __init__(self, path: str, token: str) -> None:
        self.path = path
        self.token = token
        self._lock = threading.Lock()
        self._parent_dead = False

    def __reduce__(self) -> Any:
        return WorkerEnd, (self.path, self.token)

    def receive(self, key: int, size: int) -> ReceivedSegment:
        """Job ``key``'s arguments, opened and unlinked, to be mapped in place."""
        from ._named_memory import _open_and_unlink, argument_path

        return _open_and_unlink(argument_path(self.path, key), size, False)

    def write_result(self, key: int, buffers: list[memoryview]) -> tuple[NamedSegment, list[int]]:
        """A file for job ``key``'s result in the parent's directory; refused once the parent
        is known dead, so that nothing is made after the directory was removed."""
        from ._named_memory import write_file

        with self._lock:
            if self._parent_dead:
                raise OSError("the parent process is gone")
            path = os.path.join(self.path, f"r{self.token}-{key}")
            return write_file(path, buffers)

    def parent_died(self) -> None:
        """The parent is dead: remove its directory (unless another process is at it)."""
        from ._named_memory import (
            LOCK_SUFFIX,
            RECLAIM_WAIT_SECONDS,
            _lock_if_dead,
            _ours,
            remove_directory,
        )

        with self._lock:
            self._parent_dead = True
        lock_path = self.path + LOCK_SUFFIX
        fd = _lock_if_dead(lock_path, wait=RECLAIM_WAIT_SECONDS)
        if fd is not None:
            try:
                remove_directory(self.path, lock_path)
            finally:
                os.close(fd)
        elif not os.path.exists(lock_path) and _ours(self.path):
            remove_directory(self.path, None)  # its remover stopped half-way

    def close(self) -> None:
        pass
