"""Shared-memory segments for large buffers: anonymous memfds, written once, mapped in place.

Why memfd (``os.memfd_create``) rather than ``multiprocessing.shared_memory``: a memfd has no
name, so nothing appears in ``/dev/shm`` and nothing needs a ``resource_tracker`` to unlink it.
The kernel frees its pages when the last file descriptor and the last mapping of it are gone,
which covers every way a job can end: a worker that crashes, is killed or times out loses its
descriptors and mappings with its life, and so does a parent that is SIGKILLed.

Why a socket of its own: a descriptor reaches another process only as ``SCM_RIGHTS`` data on a
Unix socket. The job pipe is read with plain ``os.read`` (``_frames.FrameReader``), which would
drop such data, so each worker gets a second, ``SOCK_SEQPACKET`` socket pair that carries
nothing but descriptors, each message tagged with its job id. The sender always sends the
descriptor before the pipe message that announces it, so the receiver never waits for it.

Writing: ``os.pwrite`` into a fresh memfd is the cheapest first touch measured here (about twice
as fast as copying into a fresh mapping of it, which takes a page fault per 4 KB page). Reading:
a read-only shared mapping with ``MAP_POPULATE`` (one pass through the page tables instead of a
fault per page), or a private, writable (copy-on-write) one when the reader must own the object.

Sealed before it leaves: once written, a segment gets ``F_SEAL_WRITE | F_SEAL_SHRINK |
F_SEAL_GROW | F_SEAL_SEAL``, so nobody, not even a thread a job left behind that reopens it
through ``/proc/self/fd``, can change or truncate what the other side maps (a truncated mapping
kills its reader with ``SIGBUS``). The writer never maps it (``pwrite``), so the write seal
cannot meet a writable shared mapping of its own; if someone else made one meanwhile, sealing
fails and the payload goes through the pipe instead. The reader checks the seals and the size
before it maps, and refuses a segment that lacks them: it fails that one job, and nothing can
pull the memory from under its reader. A private writable mapping, which results get, is
allowed on a sealed memfd (its writes are copies).
"""

from __future__ import annotations

import array
import errno
import mmap
import os
import socket
import struct
import sys
import weakref
from typing import Any, Optional

from .. import _platform
from .._platform import after_fork_in_child

# Offsets of buffers inside a segment are aligned like malloc'ed memory is for SIMD loads.
ALIGNMENT = 64
_KEY = struct.Struct("!q")
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0x8000)  # Linux; the name exists from 3.10
_MADV_POPULATE_READ = 22  # Linux 5.14: map a private mapping's pages read-only in one pass
_MAX_WRITE = 1 << 30  # Linux writes at most ~2 GB per call; stay well below
_TRACKFD = sys.version_info >= (3, 13)  # mmap(..., trackfd=False): no duplicate descriptor

try:
    import fcntl
except ImportError:  # Windows: no memfd either (see supported)
    fcntl = None  # type: ignore[assignment]
# The constants exist in fcntl from Python 3.8 on Linux; their Linux values otherwise.
_F_ADD_SEALS = getattr(fcntl, "F_ADD_SEALS", 1033)
_F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)
_F_SEAL_SEAL = getattr(fcntl, "F_SEAL_SEAL", 0x1)
_F_SEAL_SHRINK = getattr(fcntl, "F_SEAL_SHRINK", 0x2)
_F_SEAL_GROW = getattr(fcntl, "F_SEAL_GROW", 0x4)
_F_SEAL_WRITE = getattr(fcntl, "F_SEAL_WRITE", 0x8)
#: What a segment carries before its descriptor leaves the process that wrote it.
SEALS = _F_SEAL_WRITE | _F_SEAL_SHRINK | _F_SEAL_GROW | _F_SEAL_SEAL
_MFD_ALLOW_SEALING = getattr(os, "MFD_ALLOW_SEALING", 0x2)


def supported() -> bool:
    """Whether segments can be memfds passed as descriptors (Linux; see ``_platform.MEMFD``)."""
    return _platform.MEMFD


class Segment:
    """A memfd this process owns; ``close()`` (or garbage collection) gives it up.

    The memory lives on while another process still holds a descriptor or a mapping of it.
    """

    __slots__ = ("__weakref__", "fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        _OPEN.add(self)

    def close(self, _: object = None) -> None:
        """Close the descriptor (idempotent); usable as a done-callback."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            _OPEN.discard(self)
            os.close(fd)

    def map(self, writable: bool) -> memoryview:
        """Its memory, as the receiving side uses it (see :func:`map_segment`)."""
        return map_segment(self.fd, self.size, writable)

    def __del__(self) -> None:
        self.close()


# Every segment descriptor open in this process, so that a forked child can close the ones it
# inherited (the fork start method, or a job that forks): a copy would keep the memory alive
# for as long as that child lives.
_OPEN: weakref.WeakSet[Segment] = weakref.WeakSet()


def _forget_inherited() -> None:
    for segment in list(_OPEN):
        fd, segment.fd = segment.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
    _OPEN.clear()


after_fork_in_child(_forget_inherited)


# A process holds at most 1/DESCRIPTOR_SHARE of its descriptor limit in segments.
DESCRIPTOR_SHARE = 4


def may_hold_another() -> bool:
    """Whether this process may create one more segment: the segments it holds (mostly the
    arguments of queued jobs) stay under a quarter of its descriptor limit (``ulimit -n``).

    Past that a job's buffers go through the pipe instead (``_large_data``), so that a long
    queue of large jobs cannot take the descriptors that starting a worker, a pipe or a file
    the program opens needs.
    """
    return len(_OPEN) < _descriptor_limit() // DESCRIPTOR_SHARE


def _descriptor_limit() -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 1024
    return soft if 0 < soft < 1 << 30 else 1 << 30  # RLIM_INFINITY: no budget worth the name


def layout(sizes: list[int]) -> tuple[list[int], int]:
    """Aligned offsets for buffers of ``sizes`` bytes, and the segment size they need."""
    offsets: list[int] = []
    end = 0
    for size in sizes:
        start = -(-end // ALIGNMENT) * ALIGNMENT
        offsets.append(start)
        end = start + size
    return offsets, end


def write_segment(buffers: list[memoryview]) -> tuple[Segment, list[int]]:
    """A new segment holding ``buffers`` (contiguous byte views), and where each one starts."""
    offsets, size = layout([buffer.nbytes for buffer in buffers])
    segment = Segment(os.memfd_create("jobpool", os.MFD_CLOEXEC | _MFD_ALLOW_SEALING), size)
    try:
        os.ftruncate(segment.fd, size)
        for buffer, offset in zip(buffers, offsets):
            _write_at(segment.fd, buffer, offset)
        fcntl.fcntl(segment.fd, _F_ADD_SEALS, SEALS)  # EBUSY: someone mapped it writable
    except BaseException:
        segment.close()
        raise
    return segment, offsets


def check_sealed(fd: int, size: int) -> None:
    """Raise ``OSError`` unless segment ``fd`` is sealed and holds ``size`` bytes: mapped
    otherwise, it could change, or shrink and kill its reader (``SIGBUS``)."""
    seals = fcntl.fcntl(fd, _F_GET_SEALS)
    if seals & SEALS != SEALS:
        raise OSError(
            f"the shared memory sent for this job is not sealed (seals {seals:#x}); it could "
            "still be changed or truncated by the process that sent it, so it is not used"
        )
    actual = os.fstat(fd).st_size
    if actual < size:
        raise OSError(
            f"the shared memory sent for this job holds {actual} bytes where {size} were "
            "announced, so it is not used"
        )


def _write_at(fd: int, buffer: memoryview, offset: int) -> None:
    done = 0
    total = buffer.nbytes
    while done < total:
        part = buffer[done : done + _MAX_WRITE] if total - done > _MAX_WRITE else buffer[done:]
        done += os.pwrite(fd, part, offset + done)


def map_segment(fd: int, size: int, writable: bool) -> memoryview:
    """Map all of a segment: read-only and shared, or writable and private (copy-on-write).

    Either way the pages are mapped in one pass up front: a reader that touches them all (the
    usual case for a buffer that was worth sending) would otherwise take a fault per few pages.
    A private mapping is populated read-only (``MADV_POPULATE_READ``), so a page is copied only
    when it is written. The caller may close ``fd`` at once: the mapping keeps the memory.
    Only a sealed segment of at least ``size`` bytes is mapped (:func:`check_sealed`).
    """
    check_sealed(fd, size)
    return map_file(fd, size, writable)


def map_file(fd: int, size: int, writable: bool) -> memoryview:
    """Map ``size`` bytes of ``fd`` as :func:`map_segment` does, without checking seals.

    The pages are mapped in one pass where the platform can (``_platform.POPULATE``).
    """
    populate = _platform.POPULATE
    if writable:
        prot, flags = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE
    else:
        prot, flags = mmap.PROT_READ, mmap.MAP_SHARED | (_MAP_POPULATE if populate else 0)
    if _TRACKFD:
        mapped = mmap.mmap(fd, size, flags=flags, prot=prot, trackfd=False)  # type: ignore[call-arg]
        if writable and populate:
            try:
                mapped.madvise(_MADV_POPULATE_READ)
            except OSError:  # kernels before 5.14: pages are mapped as they are touched
                pass
        return memoryview(mapped)
    return _map_with_ctypes(fd, size, prot, flags, writable and populate)


def _map_with_ctypes(fd: int, size: int, prot: int, flags: int, populate: bool) -> memoryview:
    """``mmap`` without the duplicate descriptor that ``mmap.mmap`` keeps before Python 3.13.

    A result that stays alive would otherwise hold a descriptor each, and a program that keeps
    a thousand of them would run out. The memory is unmapped when the last view of it goes.
    """
    import ctypes

    libc = _libc()
    address = libc.mmap(None, size, prot, flags, fd, 0)
    if address is None or address == ctypes.c_void_p(-1).value:
        error = ctypes.get_errno()
        raise OSError(error, f"mmap of a shared-memory segment failed: {os.strerror(error)}")
    if populate:
        libc.madvise(ctypes.c_void_p(address), size, _MADV_POPULATE_READ)  # failure is harmless
    memory = (ctypes.c_char * size).from_address(address)
    weakref.finalize(memory, libc.munmap, ctypes.c_void_p(address), ctypes.c_size_t(size))
    view = memoryview(memory).cast("B")
    return view if prot & mmap.PROT_WRITE else view.toreadonly()


_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
            ctypes.c_long,
        ]  # fmt: skip
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _LIBC = libc
    return _LIBC


# --- passing descriptors ------------------------------------------------------------------------


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """The two ends of a worker's descriptor channel (message boundaries kept)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send_fd(channel: socket.socket, key: int, fd: Optional[int]) -> None:
    """Send ``fd`` tagged with ``key`` (a job id); None sends the tag alone (nothing to map)."""
    fds = [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
    channel.sendmsg([_KEY.pack(key)], fds, socket.MSG_NOSIGNAL)


def receive_fd(channel: socket.socket, key: int) -> Optional[int]:
    """The descriptor sent for ``key``; it was sent before the message that announced it.

    Raises ``OSError`` when it is not there or carries another key: a protocol error, which
    fails the one job rather than hanging the reader.
    """
    flags = socket.MSG_DONTWAIT | getattr(socket, "MSG_CMSG_CLOEXEC", 0)
    data, ancillary, message_flags, _ = channel.recvmsg(_KEY.size, socket.CMSG_SPACE(4), flags)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if message_flags & socket.MSG_CTRUNC and not fds:
        # The kernel had no descriptor number left for it here, and dropped it.
        raise OSError(
            errno.EMFILE,
            "the shared memory holding this job's data could not be received: this process "
            "has as many open files as its limit allows (ulimit -n)",
        )
    received = _KEY.unpack(data)[0] if len(data) == _KEY.size else None
    if received != key or len(fds) > 1:
        for fd in fds:
            os.close(fd)
        raise OSError(f"shared-memory channel out of step: expected job {key}, got {received}")
    return fds[0] if fds else None
