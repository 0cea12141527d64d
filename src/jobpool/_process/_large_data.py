"""Moving a job's large buffers through shared memory, and freeing them when the job is over.

The parent's side (``prepare``, ``Outgoing.send``, ``receive`` + ``Incoming.load`` for results)
and the worker's (``receive`` + ``load`` for arguments, ``dump_result``) meet in a handful of
hooks in the backend, the worker handle, the dispatcher and the worker loop; the pickling is
``_out_of_band``'s and the segments are ``_shared_memory``'s.

Lifetime, which is the hard part, follows from who holds what:

- An argument segment is created at ``submit`` and owned by the job: its descriptor is closed
  by a done-callback when the job's future resolves, however that happens (result, failure,
  crash, timeout, kill, cancel, terminate), or when the job object is dropped unsent (a full
  queue, a closed pool). A job sent ahead and given back, or requeued after a crash, still
  holds its segment, so it can be sent again. The segments a process holds stay under a
  quarter of its descriptor limit (``_shared_memory.may_hold_another``): past that, a job's
  buffers go in its pickle, so a long queue cannot take the descriptors a worker needs.
- A worker holds what it received only while it runs the job: it maps the segment, closes the
  descriptor, and the mapping goes with the last argument object that uses it. A worker that
  dies loses both with its life. Jobs given back unstarted have their descriptors closed then.
- A result segment is written by the worker, passed, and closed there at once; the parent's
  private mapping of it is the only holder left, and goes with the result object.
- Descriptors in flight on a socket whose ends are all closed are freed by the kernel, and a
  forked child closes the segment descriptors it inherited (``_shared_memory``).

A worker imports this module at start, but the segment modules (``_shared_memory``, and
``_named_memory`` where segments are named files) only when it meets its first large buffer:
most workers never do, and the fork server that preloads the worker side starts faster without
them. The parent imports them when it makes a pool's settings (:func:`large_data`).
"""

from __future__ import annotations

import errno
import functools
import select
import socket
from typing import TYPE_CHECKING, Any, Optional, Union, cast

from .. import _platform
from .._errors import SerializationError
from .._pickling_advice import explain_failure
from .._serialization import dumps
from .._work import Call, ChunkResult
from ._named_end import WorkerEnd
from ._out_of_band import loads, looks_large, pickle_payload, salvage_loads

if TYPE_CHECKING:
    from .._job import Job, Serialized
    from ._named_memory import NamedSegment, ParentEnd
    from ._shared_memory import Segment

    # One end of a worker's segment channel: a socket passing memfds, or an end of named
    # segments.
    Channel = Union[socket.socket, ParentEnd, WorkerEnd]
else:
    # Only annotations use it (_handle imports the name): a worker builds no Union, which would
    # import _named_memory or compile forward references, each dearer than this whole module.
    Channel = object

Spans = list[tuple[int, int]]  # (offset, size) of each out-of-band buffer in the segment
Wire = tuple[bytes, Spans, int]  # what replaces the pickled bytes: (stream, spans, segment size)


class Outgoing:
    """A payload's segment on the sending side, and where its buffers lie in it.

    ``named``: the segment is a named file (``_named_memory.NamedSegment``), not a memfd.
    """

    __slots__ = ("named", "segment", "spans")

    def __init__(self, segment: Segment, spans: Spans, named: bool) -> None:
        self.segment = segment
        self.spans = spans
        self.named = named

    def close(self) -> None:
        self.segment.close()

    def send(self, channel: Any, key: int, stream: bytes) -> Wire:
        """Pass the descriptor (tagged ``key``) and return what the message carries instead.

        A named segment is not passed: the receiver opens it by name (``_named_memory``).
        """
        segment = self.segment
        if self.named:
            cast("NamedSegment", segment).ensure_named()
        else:
            from ._shared_memory import send_fd

            fd = segment.fd
            send_fd(channel, key, fd if fd >= 0 else None)
        return stream, self.spans, segment.size

    def handed_over(self) -> None:
        """The message announcing it is on its way: a result's name is the receiver's now."""
        if self.named:
            cast("NamedSegment", self.segment).disown()


def _in_band(payload: Any, what: str, to_worker: bool) -> bytes:
    """``payload`` pickled whole into the stream: no segment could be made."""
    return pickle_payload(payload, what, _NEVER, likely_large=True, to_worker=to_worker)[0]


_NEVER = 1 << 62  # a threshold no buffer reaches


def _outgoing(views: list[memoryview], path: Optional[str] = None) -> Outgoing:
    """A new segment holding ``views``: a memfd, or the file ``path`` (``_named_memory``)."""
    segment: Segment
    if path is None:
        from ._shared_memory import write_segment

        segment, offsets = write_segment(views)
    else:
        from ._named_memory import write_file

        segment, offsets = write_file(path, views)
    spans = [(offset, view.nbytes) for offset, view in zip(offsets, views)]
    return Outgoing(segment, spans, named=path is not None)


class Incoming:
    """A received payload whose buffers wait in a segment; ``load()`` maps it and unpickles.

    The descriptor is closed once mapped (the mapping keeps the memory), or when this object is
    dropped unloaded (a reply that came too late, a job given back).
    """

    __slots__ = ("error", "segment", "spans", "stream")

    def __init__(
        self, wire: Wire, segment: Optional[Segment], error: Optional[BaseException]
    ) -> None:
        self.stream, self.spans = wire[0], wire[1]
        self.segment = segment
        self.error = error

    def load(self, writable: bool) -> Any:
        return loads(self.stream, self._map(writable), self.spans, writable)

    def load_result(self, job: Job) -> tuple[bool, Any]:
        """The job's result, ``(True, value)``; or ``(False, error)`` as ``_remote.load_failed``
        gives it for a result that does not load (a map chunk keeps the items that do)."""
        try:
            mapped = self._map(writable=True)
        except BaseException as exc:
            return False, exc
        try:
            return True, loads(self.stream, mapped, self.spans, True)
        except BaseException as exc:
            from .._remote import load_failed

            salvage = functools.partial(salvage_loads, self.stream, mapped, self.spans, True)
            return load_failed(job, exc, salvage)

    def _map(self, writable: bool) -> memoryview:
        segment, self.segment = self.segment, None
        if segment is None:
            raise self.error or RuntimeError(
                "the shared memory holding this job's data was released before it could be "
                "read (the job had already been resolved)"
            )
        try:
            return segment.map(writable)
        finally:
            segment.close()


def _worker_end(channel: Optional[Channel]) -> Optional[WorkerEnd]:
    """``channel`` if it is a worker's end of named segments, else None.

    A named end is a ``_named_end.WorkerEnd``, whose small module a worker imports at start
    (with this one); ``_named_memory`` comes with its first large buffer.
    """
    if channel is None or isinstance(channel, socket.socket):
        return None
    return channel if isinstance(channel, WorkerEnd) else None


def receive(channel: Optional[Channel], key: int, wire: Wire) -> Incoming:
    """The payload announced by a message for ``key``: take its descriptor off ``channel``
    (memfd), or open its file by name and unlink the name (``_named_memory``).

    Never raises: a missing descriptor or file fails only this job, when it is loaded.
    """
    try:
        if channel is None:
            raise OSError("no shared-memory channel to this process")
        if not isinstance(channel, socket.socket):  # an end of named segments
            return Incoming(wire, channel.receive(key, wire[2]), None)
        from ._shared_memory import Segment, receive_fd

        fd = receive_fd(channel, key)
    except OSError as exc:
        if exc.errno is not None and exc.errno != errno.EMFILE:  # (EMFILE says it already)
            exc = OSError(
                exc.errno,
                f"the shared memory holding this job's data could not be received: {exc.strerror}",
            )
        return Incoming(wire, None, exc)
    return Incoming(wire, None if fd is None else Segment(fd, wire[2]), None)


def discard(channel: Optional[Channel], key: int) -> None:
    """A job given back unstarted: take its descriptor off ``channel`` and close it. A named
    segment stays where it is: its name is still the parent's, to send the job again."""
    if _worker_end(channel) is None:
        receive(channel, key, (b"", [], 0))


def peer_holds(channel: Optional[Channel]) -> bool:
    """Whether the other side still holds its end of ``channel``: a socket whose worker end
    a job closed, or replaced by another file, says so (``POLLHUP``) and a descriptor sent on
    it would fail. Named files (no socket) have no end to lose."""
    if not isinstance(channel, socket.socket):
        return True
    poller = select.poll()
    poller.register(channel.fileno(), select.POLLOUT)
    return not any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def release_on_parent_death(channel: Optional[Channel]) -> None:
    """In a worker whose parent died: remove what the parent left in shared memory (named
    segments; memfds the kernel frees by itself)."""
    worker_end = _worker_end(channel)
    if worker_end is not None:
        worker_end.parent_died()


class LargeData:
    """A pool's settings for large buffers; in a worker, also its end of the segment channel.

    ``threshold``: buffers of at least this many bytes go through shared memory.
    ``writable``: a worker's argument buffers are mapped copy-on-write instead of read-only.
    ``named``: segments are files named in a directory (``_named_memory``), not memfds.
    """

    __slots__ = ("channel", "named", "threshold", "writable")

    def __init__(
        self,
        threshold: int,
        writable: bool,
        channel: Optional[Channel] = None,
        named: bool = False,
    ) -> None:
        self.threshold = threshold
        self.writable = writable
        self.channel = channel
        self.named = named or _worker_end(channel) is not None

    @property
    def settings(self) -> tuple[int, bool]:
        return self.threshold, self.writable

    def __reduce__(self) -> Any:  # travels to each worker with its end of the channel
        return LargeData, (self.threshold, self.writable, self.channel)

    def channel_pair(self) -> tuple[Channel, Channel]:
        """The parent's and the worker's end of a new worker's segment channel."""
        if not self.named:
            from ._shared_memory import socket_pair

            return socket_pair()
        from ._named_memory import ParentEnd, own_directory

        parent = ParentEnd(own_directory())
        return parent, WorkerEnd(parent.path, parent.token)

    # --- parent -------------------------------------------------------------------------------

    def prepare(self, job: Job, serialized: Serialized) -> None:
        """Pickle ``job``'s arguments (or items) into its body; large buffers into a segment.

        When no segment can be made (out of descriptors or memory), or this process holds
        its budget of segments already (``_shared_memory.may_hold_another``: a quarter of its
        descriptor limit, mostly the segments of queued jobs), the job goes through the pipe:
        its buffers are copied into its pickle now, as a segment would have them, and it holds
        no descriptor while it waits.
        """
        work = job.work
        threshold = self.threshold
        if type(work) is Call:
            args = work.args
            payload: Any = (args, work.kwargs)
            likely = looks_large(args, threshold) or (
                bool(work.kwargs) and looks_large(work.kwargs.values(), threshold)
            )
        else:  # a map chunk: its first item tells whether the items are large buffers
            items, star = work.items, work.star  # type: ignore[union-attr]
            payload = (items, star)
            likely = bool(items) and looks_large(items[0] if star else items[:1], threshold)
        try:
            if not likely:  # the usual case, inlined: today's pickle, small
                body = dumps(payload, "job")
                if len(body) < threshold:
                    serialized.body = body
                    return
            body, views = pickle_payload(payload, "job", threshold, likely_large=True)
        except SerializationError as exc:  # named from the whole call: "args[0].conn"
            raise explain_failure(work, "job", exc.__cause__ or exc) from exc.__cause__
        if views:
            from ._shared_memory import may_hold_another

            try:
                if not may_hold_another():
                    raise OSError("this process holds its budget of shared-memory segments")
                path = None
                if self.named:
                    from ._named_memory import argument_path, own_directory

                    path = argument_path(own_directory().path, job.id)
                outgoing = _outgoing(views, path)
            except OSError:
                body = _in_band(payload, "job", True)
            else:
                serialized.segment = outgoing
                job.future.add_done_callback(outgoing.segment.close)
        serialized.body = body

    # --- worker -------------------------------------------------------------------------------

    def dump_result(self, value: Any, key: int) -> Union[bytes, Wire]:
        """Pickle a job's result; large buffers go into a segment passed to the parent now."""
        threshold = self.threshold
        first = value.values[:1] if type(value) is ChunkResult else (value,)
        if not looks_large(first, threshold):  # the usual case, inlined: today's pickle, small
            body = dumps(value, "the job's result", to_worker=False)
            if len(body) < threshold:
                return body
        body, views = pickle_payload(
            value, "the job's result", threshold, likely_large=True, to_worker=False
        )
        if not views:
            return body
        channel = self.channel
        try:
            if channel is None:
                raise OSError("no shared-memory channel to the parent")
            worker_end = _worker_end(channel)
            if worker_end is not None:
                segment, offsets = worker_end.write_result(key, views)
                spans = [(offset, view.nbytes) for offset, view in zip(offsets, views)]
                outgoing = Outgoing(segment, spans, named=True)
            else:
                outgoing = _outgoing(views)
        except OSError:
            return _in_band(value, "the job's result", False)
        try:
            wire = outgoing.send(channel, key, body)
        except OSError:
            # The descriptor could not leave (a job closed this worker's end of the channel):
            # nothing was sent on it, so the result goes through the pipe, as when no segment
            # can be made, rather than failing a job that returned.
            return _in_band(value, "the job's result", False)
        else:
            outgoing.handed_over()
            return wire
        finally:
            outgoing.segment.close()  # the descriptor in flight (or the name) keeps the memory


def large_data(threshold: Optional[int], writable: bool) -> Optional[LargeData]:
    """The pool's settings, or None: off (``threshold=None``), or a platform with neither
    memfd (``_shared_memory``) nor named files (``_named_memory``): everything in the pipe."""
    if threshold is None:
        return None
    # The parent's side of the segments, imported now, before any worker is forked from this
    # process: a fork never catches one of them half-imported by another thread (which would
    # leave its import lock held in the child).
    if _platform.MEMFD:
        from . import _shared_memory  # noqa: F401

        return LargeData(threshold, writable)
    if _platform.SHARED_FILES:
        from . import _named_memory  # noqa: F401

        return LargeData(threshold, writable, named=True)
    return None
