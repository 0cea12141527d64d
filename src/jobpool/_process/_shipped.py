"""What was shipped to one worker and is kept there: the keyed functions and the blobs they name.

Both sides keep the same least-recently-used tables (see ``_protocol``), so the parent always
knows whether a worker needs a function's bytes or can be sent just its key, and tells the
worker which blobs to forget; the worker never guesses.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from typing import Callable

from .._protocol import DEFINE_BLOB, DEFINE_FN, FORGET_BLOB, FUNCTION_CACHE_SIZE
from ._blobs import MAX_BLOB_BYTES, MAX_BLOBS, Blob


class Shipped:
    """The parent's copy of one worker's function and blob tables."""

    def __init__(self) -> None:
        self._functions: OrderedDict[int, None] = OrderedDict()
        self._blobs: OrderedDict[int, int] = OrderedDict()  # blob key -> size, oldest first
        self._blob_bytes = 0

    def has_function(self, key: int) -> bool:
        return key in self._functions

    def send_function(
        self, key: int, data: bytes, blobs: tuple[Blob, ...], write: Callable[[bytes], None]
    ) -> None:
        """Make sure the worker holds function ``key``, writing its definition if it does not."""
        if key in self._functions:
            self._functions.move_to_end(key)
            return
        if blobs:
            self._send_blobs(blobs, write)
        write(pickle.dumps((DEFINE_FN, key), pickle.HIGHEST_PROTOCOL))
        write(data)
        self._functions[key] = None
        if len(self._functions) > FUNCTION_CACHE_SIZE:
            self._functions.popitem(last=False)

    def _send_blobs(self, blobs: tuple[Blob, ...], write: Callable[[bytes], None]) -> None:
        """Make sure the worker holds ``blobs``; forget its oldest others beyond the bounds."""
        needed = {key for key, _ in blobs}
        for key, value in blobs:
            if key in self._blobs:
                self._blobs.move_to_end(key)
                continue
            write(pickle.dumps((DEFINE_BLOB, key), pickle.HIGHEST_PROTOCOL))
            write(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
            self._blobs[key] = len(value)
            self._blob_bytes += len(value)
        for key in list(self._blobs):
            if len(self._blobs) <= MAX_BLOBS and self._blob_bytes <= MAX_BLOB_BYTES:
                break
            if key in needed:
                continue
            self._blob_bytes -= self._blobs.pop(key)
            write(pickle.dumps((FORGET_BLOB, key), pickle.HIGHEST_PROTOCOL))
