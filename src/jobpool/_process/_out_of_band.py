"""Arguments and results holding large buffers travel through shared memory, not the pipe.

Pickle protocol 5 (PEP 574) lets an object hand its large buffers to a ``buffer_callback``
instead of copying them into the pickle stream; numpy arrays and ``pickle.PickleBuffer`` do. The
buffers of at least ``threshold`` bytes are written once into one memfd per payload (see
``_shared_memory``) and the receiver passes views of its mapping back to ``pickle.loads``: a
worker's argument arrays point straight into the segment (read-only, unless the pool was told
otherwise), and the caller's results map the worker's segment privately, so they are its own,
writable, and outlive the pool. One copy each way, made by the side that owns the data.

The per-job cost stays small: the first pickle is the usual one plus a callback that numpy's
small arrays return from at once. ``bytes``, ``bytearray`` and ``memoryview`` do not offer their
buffers by themselves; a ``reducer_override`` makes them, but it is called for every object
pickled, so it is used only when the plain pickle came out large (or an argument is one of
them), and then the payload is pickled again with it. Numpy arrays that are neither C- nor
Fortran-contiguous (views with steps) are pickled by numpy inside the stream; the same second
pass makes them contiguous first so they go out of band as well.

How the segments travel and when they are freed is ``_large_data``'s part.
"""

from __future__ import annotations

import functools
import io
import pickle
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from .._main_globals import share_main_globals
from .._picklers import PROTOCOL, load_cloudpickle
from .._pickling_advice import explain_failure
from .._serialization import dumps

if TYPE_CHECKING:  # imported when a result fails to load (see salvage_loads)
    from .._salvage import FailedIn

_PICKLE_REFUSALS = (pickle.PicklingError, AttributeError, TypeError, RecursionError)
_MAIN_MARKER = b"__main__"


class _Buffers:
    """The ``buffer_callback``: keeps buffers of at least ``threshold`` bytes out of band."""

    __slots__ = ("threshold", "views")

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.views: list[memoryview] = []

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < self.threshold:
            return True  # in band, as without a callback
        self.views.append(view)
        return False


# --- reducers for the second pass ---------------------------------------------------------------


def _rebuild_memoryview(buffer: Any, format: str, shape: tuple[int, ...]) -> memoryview:
    view = memoryview(buffer)
    if view.format != "B":
        view = view.cast("B")
    if (format, shape) == ("B", (view.nbytes,)):
        return view
    return view.cast(format, shape)  # type: ignore[call-overload,no-any-return]


def _reduce_large(obj: Any, threshold: int) -> Any:
    """How the second pass pickles ``obj``: its buffer out of band, or NotImplemented."""
    kind = type(obj)
    if kind is memoryview:
        # Any size: memoryview is not picklable at all otherwise.
        format = obj.format.lstrip("@")
        if obj.ndim == 0 or len(format) != 1:
            return NotImplemented  # structured or explicit-endian formats: pickle refuses as ever
        data = obj if obj.c_contiguous else memoryview(obj.tobytes())
        return _rebuild_memoryview, (pickle.PickleBuffer(data), format, obj.shape)
    numpy = sys.modules.get("numpy")
    # getattr: another thread may be importing numpy, its module not yet holding ndarray
    if numpy is not None and kind is getattr(numpy, "ndarray", None):
        flags = obj.flags
        if (
            obj.nbytes >= threshold
            and not (flags.c_contiguous or flags.f_contiguous)
            and not obj.dtype.hasobject
        ):
            return numpy.ascontiguousarray(obj).__reduce_ex__(PROTOCOL)
    return NotImplemented


# Pickle never asks ``reducer_override`` about exact ``bytes`` and ``bytearray`` (nor ints,
# strs, lists...), but it asks ``persistent_id`` about everything: a large one becomes a
# persistent id holding a PickleBuffer of it, which pickle then sends out of band like any other.
_PERSISTENT_TYPES: dict[type, str] = {bytes: "jobpool.bytes", bytearray: "jobpool.bytearray"}
_REBUILD = {"jobpool.bytes": bytes, "jobpool.bytearray": bytearray}


def _persistent_id(obj: Any, threshold: int, seen: dict[int, Any]) -> Any:
    tag = _PERSISTENT_TYPES.get(type(obj))
    if tag is None or len(obj) < threshold:
        return None
    found = seen.get(id(obj))
    if found is None:  # the same object twice: the same id object, which pickle memoizes
        found = seen[id(obj)] = (tag, pickle.PickleBuffer(obj))
    return found


class _PlainPickler(pickle.Pickler):
    threshold = 0
    seen: dict[int, Any]

    def reducer_override(self, obj: Any) -> Any:
        return _reduce_large(obj, self.threshold)

    def persistent_id(self, obj: Any) -> Any:
        return _persistent_id(obj, self.threshold, self.seen)


def _cloud_pickler_type() -> Any:
    cloudpickle = load_cloudpickle()

    class CloudPickler(cloudpickle.Pickler):  # type: ignore[misc,name-defined]
        threshold = 0
        seen: dict[int, Any]

        def reducer_override(self, obj: Any) -> Any:
            reduced = _reduce_large(obj, self.threshold)
            if reduced is NotImplemented:
                return super().reducer_override(obj)
            return reduced

        def persistent_id(self, obj: Any) -> Any:
            return _persistent_id(obj, self.threshold, self.seen)

    return CloudPickler


_CLOUD_PICKLER: Any = None


def _dump_with(pickler_type: Any, obj: object, buffers: _Buffers, to_worker: bool) -> bytes:
    out = io.BytesIO()
    pickler = pickler_type(out, PROTOCOL, buffer_callback=buffers)
    pickler.threshold = buffers.threshold
    pickler.seen = {}
    if to_worker:
        share_main_globals(pickler)  # as _serialization.dumps does (see _main_globals)
    pickler.dump(obj)
    return out.getvalue()


def _with_reducers(obj: object, what: str, buffers: _Buffers, to_worker: bool) -> bytes:
    """The second pass: stdlib pickle, then cloudpickle, each with :func:`_reduce_large`."""
    global _CLOUD_PICKLER
    try:
        data: Optional[bytes] = _dump_with(_PlainPickler, obj, buffers, False)
    except _PICKLE_REFUSALS:
        data = None
    except Exception as exc:
        raise explain_failure(obj, what, exc) from exc
    if data is not None and _MAIN_MARKER not in data:
        return data
    buffers.views.clear()  # the stdlib attempt may have collected some
    try:
        if _CLOUD_PICKLER is None:
            _CLOUD_PICKLER = _cloud_pickler_type()
        return _dump_with(_CLOUD_PICKLER, obj, buffers, to_worker)
    except Exception as exc:
        raise explain_failure(obj, what, exc) from exc


def pickle_payload(
    obj: object, what: str, threshold: int, likely_large: bool = False, to_worker: bool = True
) -> tuple[bytes, list[memoryview]]:
    """The pickle of ``obj`` and its buffers of ``threshold`` bytes or more, kept out of band.

    Today's pickle first (``_serialization.dumps``), so small payloads cost what they did: a
    payload with no large buffer pickles small. When it comes out large, or ``likely_large``
    says it will (see :func:`looks_large`), the payload is pickled with the reducers that take
    large buffers out of band, stdlib pickle first and cloudpickle behind.
    """
    if not likely_large:
        data = dumps(obj, what, to_worker=to_worker)
        if len(data) < threshold:
            return data, []
    buffers = _Buffers(threshold)
    return _with_reducers(obj, what, buffers, to_worker), buffers.views


_CANDIDATES = frozenset((bytes, bytearray, memoryview))
_NDARRAY: Any = None


def looks_large(values: Iterable[Any], threshold: int) -> bool:
    """Whether one of ``values`` is itself a large buffer (or a ``memoryview``, which only the
    reducers keep a ``memoryview``): then a plain first pickle would be thrown away."""
    for value in values:
        kind = type(value)
        if kind in _CANDIDATES:
            if kind is memoryview or len(value) >= threshold:
                return True
        elif (kind is _NDARRAY or (_NDARRAY is None and _numpy_array(kind))) and (
            value.nbytes >= threshold
        ):
            return True
    return False


def _numpy_array(kind: type) -> bool:
    """Whether ``kind`` is numpy's ndarray (learning that type once numpy is imported)."""
    global _NDARRAY
    # Kept only once found: a numpy that another thread is still importing may lack it yet.
    _NDARRAY = getattr(sys.modules.get("numpy"), "ndarray", None)
    return _NDARRAY is not None and kind is _NDARRAY


def loads(
    stream: bytes, mapped: Optional[memoryview], spans: list[tuple[int, int]], writable: bool
) -> Any:
    """Unpickle ``stream`` with its out-of-band buffers: views of ``mapped`` at ``spans``.

    ``writable`` (results): numpy arrays come back writable even when the worker's array was
    read-only (a view of a read-only argument), as the caller's own objects should be.
    """
    handout = _Handout(_views(mapped, spans))
    unpickler = _WritableUnpickler if writable else _PayloadUnpickler
    try:
        return unpickler(io.BytesIO(stream), handout).load()
    finally:
        handout.last = None


def salvage_loads(
    stream: bytes,
    mapped: Optional[memoryview],
    spans: list[tuple[int, int]],
    writable: bool,
    accept: tuple[Any, ...],
) -> tuple[Any, FailedIn]:
    """:func:`loads` again, part by part, after it failed (see ``_salvage``)."""
    from .._salvage import Salvager

    loading = _WritableLoading if writable else _PayloadLoading
    salvaging = type("PayloadSalvager", (loading, Salvager), {})
    handout = _Handout(_views(mapped, spans))
    salvager = salvaging(io.BytesIO(stream), handout)
    salvager.accept = accept
    try:
        return salvager.load(), salvager.failed_in
    finally:
        handout.last = None


def _views(mapped: Optional[memoryview], spans: list[tuple[int, int]]) -> list[memoryview]:
    return [] if mapped is None else [mapped[start : start + size] for start, size in spans]


class _Handout:
    """The buffers an unpickler takes, remembering the last one taken.

    It holds no reference back to the unpickler: a cycle would keep the mapping alive until the
    garbage collector ran, and the memory with it.
    """

    __slots__ = ("_buffers", "last")

    def __init__(self, buffers: list[memoryview]) -> None:
        self._buffers = iter(buffers)
        self.last: Optional[memoryview] = None

    def __iter__(self) -> _Handout:
        return self

    def __next__(self) -> memoryview:
        self.last = next(self._buffers)
        return self.last


class _PayloadLoading:
    """Unpickles a payload whose large ``bytes`` and ``bytearray`` travelled as persistent ids.

    The same object twice arrives as the same id object (pickle's memo): it is rebuilt once.
    Mixed into the C unpickler (:class:`_PayloadUnpickler`) and into the salvaging one.
    """

    def __init__(self, file: io.BytesIO, handout: _Handout) -> None:
        super().__init__(file, buffers=handout)  # type: ignore[call-arg]
        self._handout = handout
        self._rebuilt: dict[int, tuple[Any, Any]] = {}

    def persistent_load(self, pid: Any) -> Any:
        rebuild = _REBUILD.get(pid[0]) if type(pid) is tuple and len(pid) == 2 else None
        if rebuild is None:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        known = self._rebuilt.get(id(pid))
        if known is None:
            known = self._rebuilt[id(pid)] = (pid, rebuild(pid[1]))
        return known[1]


def _on_writable(handout: _Handout, rebuild: Any, buffer: Any, *args: Any) -> Any:
    last = handout.last
    if (
        isinstance(buffer, memoryview)
        and buffer.readonly
        and last is not None
        and last.nbytes == buffer.nbytes
        and last.obj is buffer.obj
    ):
        buffer = last
    return rebuild(buffer, *args)


class _WritableLoading(_PayloadLoading):
    """Rebuilds numpy arrays and memoryviews on the writable buffers it was given.

    Pickle marks a buffer that was read-only when pickled (``READONLY_BUFFER``) and hands the
    rebuilding function a read-only view of it. Numpy's ``_frombuffer`` is called right after
    its buffer is taken (its other arguments are a dtype, a shape and an order; the same holds
    for ``_rebuild_memoryview``), so the buffer it receives is the one this unpickler handed out
    last, of which it holds a writable view.
    """

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)  # type: ignore[misc]
        if found is _rebuild_memoryview or (name == "_frombuffer" and module.startswith("numpy")):
            return functools.partial(_on_writable, self._handout, found)
        return found


class _PayloadUnpickler(_PayloadLoading, pickle.Unpickler):
    pass


class _WritableUnpickler(_WritableLoading, pickle.Unpickler):
    pass
