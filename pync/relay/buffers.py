"""The relay's bounded buffers: bytes in memory, in a kernel pipe, or left
in the file they come from.

All kinds have the same face — ``level``, ``room``, ``empty``, ``fill(src)``,
``drain(dst)`` — so the relay's end-of-stream logic is the same on either
path; a test forces each path and checks they behave alike.

* MemoryBuffer: a preallocated bytearray read into with recv_into/readv
  (no allocation per read) and written from through a memoryview.  Needed
  when bytes must be looked at or changed (-C, -i) and for descriptors
  splice() cannot take (terminals).
* PipeBuffer: the zero-copy path.  The bytes sit in a pipe pync owns and
  move with splice(): source -> pipe -> destination (/dev/null too),
  never copied into Python.  Where the platform has it (Linux, Python >=
  3.10: ``backend().zero_copy``).
* FileSendBuffer: a regular file to a socket with sendfile(), handing
  over to a MemoryBuffer when a receiver on this host reads too slowly.

The system calls are the platform's (platform/linux.py); the buffers'
bookkeeping, here, is the same on every path.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from ..platform import backend
from ..platform.base import is_socket
from .streams import SocketStream, Stream

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

BUFSIZE = 128 * 1024
DATAGRAM_MAX = 256 * 1024  # larger than any UDP or UNIX datagram we may receive
UDP_PAYLOAD_MAX = 65507    # the largest UDP payload over IPv4
# sendfile() moves at most this much per call: larger calls were slower
# (scripts/bench, file stdin); splice() takes all the room its pipe has.
SENDFILE_CHUNK = 128 * 1024
# Where a PipeBuffer reads what splice() would not take (urgent data, the end
# of stream): one for all of them, used and emptied within one call (a
# thousand forwarded pairs would otherwise hold 64 KiB each for it).
_SPARE = memoryview(bytearray(65536))


class MemoryBuffer:
    """A fixed bytearray with a window [start, end) of pending bytes."""

    def __init__(self, size: int = BUFSIZE, whole_messages: bool = False) -> None:
        self.size = size
        self.whole_messages = whole_messages
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0

    @property
    def level(self) -> int:
        return self.end - self.start

    @property
    def empty(self) -> bool:
        return self.start == self.end

    @property
    def room(self) -> int:
        """Bytes that can be read in now (after moving pending bytes down).

        In message mode only an empty buffer takes more: each read is one
        datagram in or out, never split and never merged.
        """
        if self.whole_messages and self.start != self.end:
            return 0
        return self.size - self.level

    def _make_room(self) -> None:
        """Move pending bytes to the front, so all the room is at the end."""
        if self.start == self.end:
            self.start = self.end = 0
        elif self.start:
            n = self.end - self.start
            self.view[:n] = self.view[self.start:self.end]
            self.start, self.end = 0, n

    def fill(self, src: Stream, limit: Optional[int] = None) -> int:
        """Read once from src (at most limit bytes); 0 means end of stream."""
        self._make_room()
        stop = self.size if limit is None else min(self.size, self.end + limit)
        n = src.read_into(self.view[self.end:stop])
        self.end += n
        return n

    def append(self, data: bytes) -> None:
        """Queue bytes a transform produced (the caller checked the room)."""
        self._make_room()
        n = len(data)
        if self.end + n > self.size:
            raise ValueError("buffer overflow")
        self.view[self.end:self.end + n] = data
        self.end += n

    def first_line_end(self) -> int:
        """Bytes up to and including the first LF, or 0 if there is none."""
        nl = self.buf.find(b"\n", self.start, self.end)
        return nl + 1 - self.start if nl >= 0 else 0

    def drain(self, dst: Stream, limit: Optional[int] = None) -> int:
        """Write once to dst, at most limit bytes; returns how many went."""
        stop = self.end if limit is None else self.start + limit
        n = dst.write(self.view[self.start:stop])
        self.start += n
        if self.start == self.end:
            self.start = self.end = 0
        return n

    def clear(self) -> None:
        self.start = self.end = 0

    def close(self) -> None:
        pass


class PipeBuffer:
    """Pending bytes held in a pipe of pync's own, moved with splice()."""

    def __init__(self, src_is_socket: bool = False, grown: bool = True) -> None:
        self._plat = backend()
        self.r, self.w, self.size = self._plat.new_pipe(grown)
        self.level = 0
        self.full = False  # the pipe refused more although level < size
        # A socket source is non-blocking, so a plain read may stand in for
        # splice() where splice cannot go on (TCP urgent data stops it).
        self.src_is_socket = src_is_socket

    @property
    def empty(self) -> bool:
        return self.level == 0

    @property
    def room(self) -> int:
        return 0 if self.full else self.size - self.level

    def fill(self, src: Stream) -> int:
        assert src.read_fd is not None
        try:
            n = self._plat.splice(src.read_fd, self.w, self.size - self.level)
        except BlockingIOError:
            if self.level:
                # Partly filled pages can fill the pipe before `size` bytes:
                # wait for the destination to take some, not spin on the source.
                self.full = True
                raise
            if not self.src_is_socket:
                raise
            return self._fill_by_reading(src)  # poll said readable: see why
        if n == 0 and self.src_is_socket:
            return self._fill_by_reading(src)  # EOF, or splice stopped at urgent data
        self.level += n
        return n

    def _fill_by_reading(self, src: Stream) -> int:
        """One plain read into the (empty) pipe, where splice() returned
        nothing: it is the real end of stream only if recv says so too.

        splice() will not read past TCP urgent data; recv() skips the urgent
        byte, as nc does, so the bytes after it are not lost.
        """
        n = src.read_into(_SPARE)
        if n:
            os.write(self.w, _SPARE[:n])  # the pipe is empty
            self.level += n
        return n

    def append(self, data: bytes) -> None:
        """Queue bytes already read (a proxy's first tunnel bytes); the pipe is empty."""
        view = memoryview(data)
        while view:
            n = os.write(self.w, view)
            view = view[n:]
            self.level += n

    def drain(self, dst: Stream, limit: Optional[int] = None) -> int:
        assert dst.write_fd is not None
        n = self._plat.splice(self.r, dst.write_fd, self.level if limit is None else limit)
        self.level -= n
        if n:
            self.full = False
        return n

    def clear(self) -> None:
        self.level = 0
        self.full = False

    def grow(self) -> None:
        """A pipe made small (one of many pairs') grows for a bulk flow."""
        self.size = self._plat.grow_pipe_to(self.w)

    def close(self) -> None:
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


class FileSendBuffer:
    """A regular file to a socket with sendfile(): one system call per chunk.

    Nothing is held in memory: ``fill`` only notes how much of the file is
    left to send (0: end of file, as a read would say), ``drain`` sends from
    the file's current offset, which sendfile advances.

    To a receiver on this host that proves slower than pync, the rest goes
    by copying instead (a MemoryBuffer): the receiver then reads pages the
    socket owns rather than the file's own pages, which a receiver using
    read() (nc, ncat, socat) copies two to three times slower.  A receiver
    that splices (pync) is faster with sendfile, and keeps it: the switch
    comes only when pync spent more than WAIT_SHARE of the time of two
    WINDOWs in a row waiting for the socket to take more (measured here: a
    read() receiver kept it waiting 80-90% of the time, pync's 0-20%).
    Across a network sendfile stays.
    """

    WINDOW = 16 * 1024 * 1024  # bytes sent between two looks at the waiting
    WAIT_SHARE = 0.5

    def __init__(self, local_peer: bool = False) -> None:
        self.level = 0
        self._src: Optional[int] = None
        self._left = 0  # bytes of the file known to remain after its offset
        self.copy: Optional[MemoryBuffer] = None  # set once copying took over
        self._judge = local_peer
        self._window_start = 0.0
        self._window_sent = 0
        self._waited = 0.0
        self._blocked_at = 0.0
        self._slow_windows = 0  # windows in a row where the receiver held us up

    @property
    def empty(self) -> bool:
        return self.copy.empty if self.copy is not None else self.level == 0

    @property
    def room(self) -> int:
        if self.copy is not None:
            return self.copy.room
        return 0 if self.level else SENDFILE_CHUNK

    def fill(self, src: Stream) -> int:
        if self.copy is not None:
            return self.copy.fill(src)
        assert src.read_fd is not None
        self._src = src.read_fd
        if self._left <= 0:  # look again: the file may have grown (or shrunk)
            self._left = os.fstat(src.read_fd).st_size - os.lseek(src.read_fd, 0, os.SEEK_CUR)
        self.level = max(min(self._left, SENDFILE_CHUNK), 0)
        return self.level

    def drain(self, dst: Stream, limit: Optional[int] = None) -> int:
        if self.copy is not None:
            return self.copy.drain(dst, limit)
        assert dst.write_fd is not None and self._src is not None
        now = time.monotonic() if self._judge else 0.0
        if self._blocked_at:
            self._waited += now - self._blocked_at
            self._blocked_at = 0.0
        try:
            n = backend().sendfile(dst.write_fd, self._src, self.level if limit is None else limit)
        except BlockingIOError:
            if self._judge:
                self._blocked_at = now
            raise
        # 0: the file shrank since fill() looked; the next fill() sees its end.
        self.level = self.level - n if n else 0
        self._left = self._left - n if n else 0
        if self._judge:
            self._weigh(n, now)
        return n

    def _weigh(self, sent: int, now: float) -> None:
        """Every WINDOW bytes: did the receiver keep pync waiting?"""
        if not self._window_start:
            self._window_start = now
        self._window_sent += sent
        if self._window_sent < self.WINDOW:
            return
        slow = self._waited > self.WAIT_SHARE * (now - self._window_start)
        self._slow_windows = self._slow_windows + 1 if slow else 0
        if self._slow_windows >= 2:
            self.copy = MemoryBuffer()  # no byte is held here: the file offset is the truth
            self.level = 0
            self._judge = False
        self._window_start, self._window_sent, self._waited = now, 0, 0.0

    def append(self, data: bytes) -> None:
        raise ValueError("nothing is appended to a file being sent")

    def clear(self) -> None:
        self.level = 0
        if self.copy is not None:
            self.copy.clear()

    def close(self) -> None:
        pass


def zero_copy_allowed() -> bool:
    """splice() exists here and the tests did not ask for the copy path."""
    return backend().zero_copy and os.environ.get("PYNC_ZERO_COPY", "1") != "0"


def _same_host(dst: Stream) -> bool:
    return isinstance(dst, SocketStream) and backend().same_host(dst.sock)


def _regular_file(fd: Optional[int]) -> bool:
    try:
        return fd is not None and stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def new_buffer(src: Stream, dst: Stream, transform: bool, memory_size: int = BUFSIZE,
               pipe_grows: bool = True):
    """The buffer for one direction: sendfile from a file to a socket, a pipe
    when splice can do the moving (at once as large as allowed, unless not
    ``pipe_grows``), else memory (``memory_size`` bytes)."""
    plat = backend()
    if (not transform and zero_copy_allowed() and src.zero_copy and dst.zero_copy
            and plat.can_splice(src.read_fd, False) and plat.can_splice(dst.write_fd, True)):
        if plat.sendfile_to_socket and _regular_file(src.read_fd) and is_socket(dst.write_fd):
            return FileSendBuffer(local_peer=_same_host(dst))
        try:
            return PipeBuffer(src_is_socket=is_socket(src.read_fd), grown=pipe_grows)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
    return MemoryBuffer(memory_size)
