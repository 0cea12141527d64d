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
from typing import Any, Optional

from .._errors import SerializationError
from .._job import Call
from .._serialization import PROTOCOL, _cloudpickle, explain_failure

_PICKLE_REFUSALS = (pickle.PicklingError, AttributeError, TypeError, RecursionError)
_MAIN_MARKER = b"__main__"
_CANDIDATES = (bytes, bytearray, memoryview)


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


def _rebuild_bytes(buffer: Any) -> bytes:
    return bytes(buffer)


def _rebuild_bytearray(buffer: Any) -> bytearray:
    return bytearray(buffer)


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
    if kind is bytes or kind is bytearray:
        if len(obj) < threshold:
            return NotImplemented
        rebuild = _rebuild_bytes if kind is bytes else _rebuild_bytearray
        return rebuild, (pickle.PickleBuffer(obj),)
    if kind is memoryview:
        # Any size: memoryview is not picklable at all otherwise.
        format = obj.format.lstrip("@")
        if obj.ndim == 0 or len(format) != 1:
            return NotImplemented  # structured or explicit-endian formats: pickle refuses as ever
        data = obj if obj.c_contiguous else memoryview(obj.tobytes())
        return _rebuild_memoryview, (pickle.PickleBuffer(data), format, obj.shape)
    numpy = sys.modules.get("numpy")
    if numpy is not None and kind is numpy.ndarray:
        flags = obj.flags
        if (
            obj.nbytes >= threshold
            and not (flags.c_contiguous or flags.f_contiguous)
            and not obj.dtype.hasobject
        ):
            return numpy.ascontiguousarray(obj).__reduce_ex__(PROTOCOL)
    return NotImplemented


class _PlainPickler(pickle.Pickler):
    threshold = 0

    def reducer_override(self, obj: Any) -> Any:
        return _reduce_large(obj, self.threshold)


def _cloud_pickler_type() -> Any:
    cloudpickle = _cloudpickle()

    class CloudPickler(cloudpickle.Pickler):  # type: ignore[misc,name-defined]
        threshold = 0

        def reducer_override(self, obj: Any) -> Any:
            reduced = _reduce_large(obj, self.threshold)
            if reduced is NotImplemented:
                return super().reducer_override(obj)
            return reduced

    return CloudPickler


_CLOUD_PICKLER: Any = None


def _dump_with(pickler_type: Any, obj: object, buffers: _Buffers) -> bytes:
    out = io.BytesIO()
    pickler = pickler_type(out, PROTOCOL, buffer_callback=buffers)
    pickler.threshold = buffers.threshold
    pickler.dump(obj)
    return out.getvalue()


def dumps(obj: object, what: str, buffers: _Buffers, override: bool) -> bytes:
    """Pickle ``obj`` (stdlib pickle, then cloudpickle), large buffers collected in ``buffers``.

    ``override``: the second pass, which also takes ``bytes``, ``bytearray``, ``memoryview``
    and non-contiguous numpy arrays out of band.
    """
    global _CLOUD_PICKLER
    try:
        if override:
            data: Optional[bytes] = _dump_with(_PlainPickler, obj, buffers)
        else:
            data = pickle.dumps(obj, PROTOCOL, buffer_callback=buffers)
    except _PICKLE_REFUSALS:
        data = None
    except Exception as exc:  # an object whose __reduce__ raises something else
        raise explain_failure(obj, what, exc) from exc
    if data is not None and _MAIN_MARKER not in data:
        return data
    buffers.views.clear()  # the stdlib attempt may have collected some
    try:
        if override:
            if _CLOUD_PICKLER is None:
                _CLOUD_PICKLER = _cloud_pickler_type()
            return _dump_with(_CLOUD_PICKLER, obj, buffers)
        return _cloudpickle().dumps(obj, PROTOCOL, buffer_callback=buffers)  # type: ignore[no-any-return]
    except Exception as exc:
        raise explain_failure(obj, what, exc) from exc


def pickle_payload(
    obj: object, what: str, threshold: int, override: bool = False
) -> tuple[bytes, list[memoryview]]:
    """The pickle of ``obj`` and its buffers of ``threshold`` bytes or more, kept out of band.

    A plain pickle first; when it still comes out large (big ``bytes`` inside, say) or
    ``override`` asks for it, again with the reducers that take those out of band too. A
    payload that only the second pass can pickle (a ``memoryview``) gets it too; when neither
    can, the plain pass's error is raised.
    """
    if not override:
        buffers = _Buffers(threshold)
        try:
            data = dumps(obj, what, buffers, False)
        except SerializationError as exc:
            plain_error: Optional[SerializationError] = exc
        else:
            if len(data) < threshold:
                return data, buffers.views
            plain_error = None
        buffers = _Buffers(threshold)
        try:
            return dumps(obj, what, buffers, True), buffers.views
        except SerializationError:
            if plain_error is None:
                raise
        raise plain_error
    buffers = _Buffers(threshold)
    return dumps(obj, what, buffers, True), buffers.views


def has_large_argument(call: Call, threshold: int) -> bool:
    """Whether an argument itself is ``bytes``/``bytearray`` of ``threshold`` bytes or more, or
    a ``memoryview``: then the plain first pass would only be thrown away."""
    for value in call.args:
        if type(value) in _CANDIDATES and (type(value) is memoryview or len(value) >= threshold):
            return True
    for value in call.kwargs.values():
        if type(value) in _CANDIDATES and (type(value) is memoryview or len(value) >= threshold):
            return True
    return False


def loads(
    stream: bytes, mapped: Optional[memoryview], spans: list[tuple[int, int]], writable: bool
) -> Any:
    """Unpickle ``stream`` with its out-of-band buffers: views of ``mapped`` at ``spans``.

    ``writable`` (results): numpy arrays come back writable even when the worker's array was
    read-only (a view of a read-only argument), as the caller's own objects should be.
    """
    buffers = [] if mapped is None else [mapped[start : start + size] for start, size in spans]
    if not writable or mapped is None or mapped.readonly:
        return pickle.loads(stream, buffers=buffers)
    handout = _Handout(buffers)
    try:
        return _WritableUnpickler(io.BytesIO(stream), handout).load()
    finally:
        handout.last = None


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


class _WritableUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and memoryviews on the writable buffers it was given.

    Pickle marks a buffer that was read-only when pickled (``READONLY_BUFFER``) and hands the
    rebuilding function a read-only view of it. Numpy's ``_frombuffer`` is called right after
    its buffer is taken (its other arguments are a dtype, a shape and an order; the same holds
    for ``_rebuild_memoryview``), so the buffer it receives is the one this unpickler handed out
    last, of which it holds a writable view.
    """

    def __init__(self, file: io.BytesIO, handout: _Handout) -> None:
        super().__init__(file, buffers=handout)
        self._handout = handout

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)
        if found is _rebuild_memoryview or (name == "_frombuffer" and module.startswith("numpy")):
            return functools.partial(_on_writable, self._handout, found)
        return found
