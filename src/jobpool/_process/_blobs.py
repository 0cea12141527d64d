"""Large immutable values inside a function travel to each worker once, not with every job.

A function is pickled again at every ``submit``, so a changed function (a closure whose captured
dict was updated, a lambda redefined) is never run stale. What makes that slow is bulk: a closure
holding 20 MB of ``bytes``. Such a value cannot change, so it is pickled out of line, as a
*blob*: the function's pickle names it by key (pickle's persistent ids), each worker receives
each blob once, and re-pickling the function costs only its small part. Equal function pickles
then get the same function key (``FunctionKeys``), so a worker keeps its unpickled copy: the
function is shipped once per worker, and again whenever its pickle changes.

Only ``bytes`` and ``str`` are blobs: immutable, so a key can never name stale content. Mutable
values (lists, dicts, arrays) are pickled with the function every time. The parent holds a
reference to each keyed object (so its ``id`` cannot be reused for another object) and forgets
the oldest beyond :data:`MAX_BLOBS` or :data:`MAX_BLOB_BYTES`; each worker's copies are bounded
the same way (see ``WorkerHandle``).
"""

from __future__ import annotations

import io
import pickle
import threading
from collections import OrderedDict
from typing import Any, Callable, Optional

from .. import _main_globals
from .._main_globals import share_main_globals
from .._picklers import PROTOCOL, load_cloudpickle
from .._pickling_advice import explain_failure
from .._serialization import pickle_plainly

BLOB_TYPES = (bytes, str)
# Smaller values are cheap to pickle with the function; larger ones are sent out of line.
BLOB_MIN_SIZE = 64 * 1024
# How many blobs, and how many bytes of them, the parent and each worker keep.
MAX_BLOBS = 16
MAX_BLOB_BYTES = 512 * 1024 * 1024

Blob = tuple[int, Any]  # (key, the bytes or str object)


class BlobTable:
    """The parent's keys for blob objects, by identity, holding each object while keyed."""

    def __init__(self) -> None:
        self._keys: dict[int, int] = {}  # id(obj) -> key
        self._held: OrderedDict[int, Any] = OrderedDict()  # key -> obj, oldest first
        self._held_bytes = 0
        self._next = 0
        self._lock = threading.Lock()

    def key(self, obj: Any) -> int:
        with self._lock:
            key = self._keys.get(id(obj))
            if key is not None:
                self._held.move_to_end(key)
                return key
            key = self._next
            self._next += 1
            self._keys[id(obj)] = key
            self._held[key] = obj
            self._held_bytes += len(obj)
            while len(self._held) > 1 and (
                len(self._held) > MAX_BLOBS or self._held_bytes > MAX_BLOB_BYTES
            ):
                _, old = self._held.popitem(last=False)
                del self._keys[id(old)]
                self._held_bytes -= len(old)
            return key


def _blob_pickler(base: type[pickle.Pickler]) -> Any:
    class BlobPickler(base):  # type: ignore[valid-type,misc]
        """Pickles large bytes/str by key, collecting (key, object) pairs in ``blobs``."""

        def __init__(self, file: io.BytesIO, table: BlobTable) -> None:
            super().__init__(file, PROTOCOL)
            self.table = table
            self.blobs: list[Blob] = []

        def persistent_id(self, obj: Any) -> Optional[int]:
            if type(obj) in BLOB_TYPES and len(obj) >= BLOB_MIN_SIZE:
                key = self.table.key(obj)
                self.blobs.append((key, obj))
                return key
            return None

    return BlobPickler


_PlainBlobPickler = _blob_pickler(pickle.Pickler)
_cloud_blob_pickler: Any = None


def _cloud_pickler() -> Any:
    global _cloud_blob_pickler
    if _cloud_blob_pickler is None:
        _cloud_blob_pickler = _blob_pickler(load_cloudpickle().Pickler)
    return _cloud_blob_pickler


def dumps_function(fn: Callable[..., Any], table: BlobTable) -> tuple[bytes, tuple[Blob, ...]]:
    """Serialize ``fn`` for a worker; returns its bytes and the blobs they refer to.

    The same choice as ``jobpool._serialization.dumps``: plain pickle when it can find the
    function again in a fresh process (a small module-level function takes that path and has no
    blobs), cloudpickle otherwise; either way with large bytes/str pickled out of line.
    """
    data = pickle_plainly(fn, "fn")
    if data is not None:
        if len(data) < BLOB_MIN_SIZE:
            return data, ()
        pickler_type = _PlainBlobPickler  # picklable by reference, but holding large values
    else:
        pickler_type = _cloud_pickler()
    buffer = io.BytesIO()
    pickler = pickler_type(buffer, table)
    share_main_globals(pickler)
    try:
        pickler.dump(fn)
    except Exception as exc:
        raise explain_failure(fn, "fn", exc) from exc
    blobs = dict(pickler.blobs)
    return buffer.getvalue(), tuple(blobs.items())


class _BlobUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, blobs: dict[int, Any]) -> None:
        super().__init__(io.BytesIO(data))
        self._blobs = blobs

    def persistent_load(self, pid: Any) -> Any:
        return self._blobs[pid]


def loads_function(data: bytes, blobs: dict[int, Any]) -> Any:
    """Unpickle a function whose pickle may name blobs this worker holds."""
    return _main_globals.loads(data, lambda data: _BlobUnpickler(data, blobs).load())
