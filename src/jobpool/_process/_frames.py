"""Reads and writes length-prefixed messages on a pipe with as few system calls as possible.

``Connection.recv_bytes`` reads a message with two ``read`` calls (header, then body), and each
one releases and retakes the GIL. In the parent that GIL hand-off is the expensive part: another
Python thread (the one submitting jobs) is usually waiting for it. A :class:`FrameReader` takes
whatever the pipe holds in one ``read`` and splits it into every complete message, which is one
call per message, or fewer when several arrived together.

The format is ``multiprocessing.Connection``'s, so the other end keeps using ``send_bytes``: a
4-byte big-endian signed length, or ``-1`` followed by an 8-byte length for huge messages.

A worker's messages are pickles, so the parent reads its pipes with ``pickles=True``: a frame
whose length is negative (other than -1) or too short for a pickle, or whose body does not
begin as a pickle does (``PROTO`` and a protocol number), is not a message. The reader then
stops (``corrupt`` says what it saw, ``eof`` is set): it cannot find the next message in
garbage, and it must not wait for the gigabyte a garbage header may announce.
"""

from __future__ import annotations

import os
import struct
from multiprocessing.connection import wait
from typing import Optional, Union

from .. import _platform

_HEADER = struct.Struct("!i")
_HUGE_HEADER = struct.Struct("!Q")
#: The most a frame's header takes (a huge frame's: see write_frame).
FRAME_HEADER_BYTES = _HEADER.size + _HUGE_HEADER.size
READ_SIZE = 1 << 16
SMALL_WRITE = 1 << 14  # below this, header and body go out in one write (a copy is cheaper)
_PROTO = 0x80  # the first byte of a pickle of protocol 2 or later, then the protocol number
_MAX_PROTOCOL = 5


def write_frame(fd: int, data: bytes) -> None:
    """``Connection.send_bytes`` in one call: the same format, without its layers of checks."""
    size = len(data)
    if size < SMALL_WRITE:  # the usual case: one copy, one write
        frame = _HEADER.pack(size) + data
        written = os.write(fd, frame)
        if written == len(frame):
            return
        view = memoryview(frame)[written:]
        while view:
            view = view[os.write(fd, view) :]
        return
    huge = size > 0x7FFFFFFF
    header = _HEADER.pack(-1) + _HUGE_HEADER.pack(size) if huge else _HEADER.pack(size)
    for part in (header, data):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]


# At most this many buffers per ``writev`` (POSIX guarantees IOV_MAX >= 16; Linux has 1024).
_MAX_BUFFERS = 512


def write_frames(fd: int, messages: list[bytes]) -> None:
    """Write ``messages``, in order, as ``write_frame`` each would, in one system call.

    A write to a process's pipe costs the dispatcher more than its bytes (the kernel's work,
    a wake-up, the GIL given up and taken back); several jobs for one worker go out together.
    Each message's header and body are separate buffers (``os.writev``): nothing is copied.
    """
    if len(messages) == 1 or not _platform.WRITEV:
        for data in messages:
            write_frame(fd, data)
        return
    buffers: list[bytes] = []
    for data in messages:
        size = len(data)
        if size > 0x7FFFFFFF:
            buffers.append(_HEADER.pack(-1) + _HUGE_HEADER.pack(size))
        else:
            buffers.append(_HEADER.pack(size))
        buffers.append(data)
    while buffers:
        batch = buffers[:_MAX_BUFFERS]
        del buffers[:_MAX_BUFFERS]
        written = os.writev(fd, batch)
        for part in batch:  # what a short write left out, in order
            if written >= len(part):
                written -= len(part)
                continue
            view = memoryview(part)[written:]
            while view:
                view = view[os.write(fd, view) :]
            written = 0


class FrameReader:
    """Buffers one pipe's bytes and yields its complete messages (see the module docstring for
    ``pickles``)."""

    __slots__ = ("_buffer", "_fd", "_pickles", "corrupt", "eof")

    def __init__(self, fd: int, pickles: bool = False) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._pickles = pickles
        self.eof = False
        self.corrupt: Optional[str] = None  # what the pipe held that is not a message

    def read(self) -> list[bytes]:
        """One ``read`` (call when the fd is readable); the messages now complete, in order."""
        if self.eof:  # the end, or stopped: nothing more is read from this pipe
            return []
        try:
            data = os.read(self._fd, max(READ_SIZE, self._missing()))
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return []
        if not self._buffer and len(data) >= 6:  # the usual case: exactly one whole message
            (size,) = _HEADER.unpack_from(data)
            if size + 4 == len(data) and (not self._pickles or _pickled(data, 4)):
                return [data[4:]]
        self._buffer += data
        return self._split()

    def read_ready(self) -> list[bytes]:
        """Every message already waiting in the pipe, without ever blocking."""
        messages: list[bytes] = []
        while not self.eof and wait([self._fd], 0):
            messages += self.read()
        return messages

    def stop(self, why: str) -> None:
        """Read nothing more from this pipe (what it holds cannot be trusted)."""
        if self.corrupt is None:
            self.corrupt = why
        self.eof = True
        self._buffer.clear()

    def _missing(self) -> int:
        """Bytes still needed to complete the message at the front (0 if unknown)."""
        buffer = self._buffer
        if len(buffer) < 4:
            return 0
        (size,) = _HEADER.unpack_from(buffer)
        start = 4
        if size == -1:
            if len(buffer) < 12:
                return 0
            (size,) = _HUGE_HEADER.unpack_from(buffer, 4)
            start = 12
        return max(0, int(start + size) - len(buffer))

    def _split(self) -> list[bytes]:
        buffer = self._buffer
        messages: list[bytes] = []
        position = 0
        end = len(buffer)
        while end - position >= 4:
            (size,) = _HEADER.unpack_from(buffer, position)
            start = position + 4
            if size == -1:
                if end - position < 12:
                    break
                (size,) = _HUGE_HEADER.unpack_from(buffer, start)
                start += 8
            if self._pickles and not self._plausible(buffer, start, end, size):
                return messages
            if end - start < size:
                break
            messages.append(bytes(buffer[start : start + size]))
            position = start + size
        if position:
            del buffer[:position]
        return messages

    def _plausible(self, buffer: bytearray, start: int, end: int, size: int) -> bool:
        """Whether the frame at ``start`` can be a pickle; if not, the reader stops (corrupt)."""
        if size >= 4 and (end - start < 2 or _pickled(buffer, start)):
            return True
        shown = bytes(buffer[start : min(end, start + 16)])
        self.corrupt = f"bytes that are not a message (a frame of {size} bytes: {shown!r}...)"
        self.eof = True
        buffer.clear()
        return False


def _pickled(data: Union[bytes, bytearray], start: int) -> bool:
    """Whether ``data[start:]`` begins as a pickle of protocol 2 or later does."""
    return data[start] == _PROTO and 2 <= data[start + 1] <= _MAX_PROTOCOL
