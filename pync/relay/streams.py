"""Streams: the two ends the relay joins.

A Stream is anything with a descriptor to read from and one to write to,
that can be half-closed: stdin/stdout, a TCP or UNIX socket, and later a
datagram socket, a child process's pipes or a TLS session.  The relay only
calls the methods below, so a new kind of end never touches the loop.

Reads go into a caller-owned memoryview (no allocation per read); a read
returns 0 at end of stream and raises BlockingIOError when nothing is ready.
"""

from __future__ import annotations

import functools
import os
import socket
import stat

from ..platform import EVENT_READ, EVENT_WRITE, backend

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

    from ..platform.base import Backend
    from ..platform.bridge import ReaderBridge, WriterBridge


class Stream:
    """One end of a session: read_fd is read from, write_fd written to."""

    read_fd: Optional[int] = None
    write_fd: Optional[int] = None
    label: str = ""
    # May the relay move bytes with splice() between the raw descriptors?
    # False for ends that transform bytes themselves (TLS).
    zero_copy: bool = True
    # Message boundaries matter (UDP, UNIX datagrams): one read, one message.
    datagram: bool = False
    # A read never blocks: it raises BlockingIOError when nothing is there.
    nonblocking: bool = False
    # Descriptors of this end the platform cannot wait on but that are always
    # ready (a regular file to read; stdout on Windows, written as nc writes
    # it, blocking): the relay uses them without waiting.
    always_ready: frozenset[int] = frozenset()

    def can_write(self) -> bool:
        """False while a write has nowhere to go (no datagram peer yet)."""
        return True

    # Bytes may wait here that the descriptor no longer signals (TLS records
    # decrypted, a bridge's queue): the relay asks ``pending()`` each round.
    holds_bytes: bool = False

    def pending(self) -> bool:
        """Bytes already read from the descriptor but not yet returned (TLS)."""
        return False

    def read_into(self, buf: memoryview) -> int:
        raise NotImplementedError

    def write(self, data: memoryview) -> int:
        raise NotImplementedError

    def shutdown_read(self) -> None:
        """Stop receiving (nc's shutdown(SHUT_RD)); a no-op where meaningless."""

    def shutdown_write(self) -> None:
        """Send end-of-stream to the other side while still reading (-N)."""

    # Seconds shutdown_write() may wait for room to send what ends the stream
    # (TLS's close_notify); a hub, which must not stall, sets 0 and calls
    # shutdown_write() again when closing() says the socket has room.
    close_wait: float = 0.0

    def closing(self) -> int:
        """What shutdown_write() asked for that has not all gone out yet
        waits for: 0, nothing (done, or never asked); EVENT_WRITE, room in
        the socket (call shutdown_write() again then); EVENT_READ, the
        relay reading what this end holds (the read finishes it)."""
        return 0

    def close(self) -> None:
        """Release what this Stream owns."""

    def interrupt(self) -> None:
        """The session was cut short (a signal): close() should not linger."""

    def start(self) -> None:
        """A loop is about to use this end (a bridge starts reading only now)."""

    def settled_at(self) -> float:
        """Until this time, input already waiting when the loop started may
        still be on its way (a bridge's thread): the relay does not end a
        session for the other side before then.  0: nothing is owed."""
        return 0.0

    def wake_at(self, nbytes: int) -> bool:
        """Have poll() report readable only once nbytes wait (or the end of
        stream, or an error); 1 undoes it.  False where this stream cannot."""
        return False


class FdStream(Stream):
    """A Stream on plain descriptors (pipes, files, terminals).

    Where the platform's wait cannot take a descriptor (on Windows anything
    but a socket), a regular file is read as it is (always ready), stdout is
    written as it is (blocking, as nc writes it, and as pync does on Linux
    when the reader is slow), and any other descriptor goes through a bridge
    (platform/bridge.py): the relay then reads or writes the bridge's
    socket, and a thread the descriptor.  ``source_fd`` and ``sink_fd`` are
    the descriptors themselves, bridged or not.
    """

    source_fd: Optional[int] = None
    sink_fd: Optional[int] = None
    _plat: Backend
    _reader: Optional[ReaderBridge] = None
    _writer: Optional[WriterBridge] = None

    def _attach(self, read_fd: Optional[int], write_fd: Optional[int],
                read_done: Optional[Callable[[], None]] = None,
                write_done: Optional[Callable[[], None]] = None,
                blocking_writes: bool = True) -> None:
        """Use these descriptors, through bridges where they cannot be waited
        on (``blocking_writes``: a write may block, as stdout's may; a
        child's stdin must not, it may never be read)."""
        plat = self._plat = backend()
        self.source_fd, self.sink_fd = read_fd, write_fd
        self.read_fd, self.write_fd = read_fd, write_fd
        ready = set()
        if read_fd is not None and not plat.can_wait(read_fd, EVENT_READ):
            plat.binary(read_fd)
            if _regular_file(read_fd):
                ready.add(read_fd)
            else:
                if read_done is None:  # not pync's own: its thread reads a copy,
                    read_fd = os.dup(read_fd)  # whose number no one else reuses
                    read_done = functools.partial(os.close, read_fd)
                self._reader = plat.reader_bridge(read_fd, read_done)
                self.read_fd = self._reader.sock.fileno()
                self.nonblocking = True
                self.holds_bytes = True
            self.zero_copy = False
        if write_fd is not None and not plat.can_wait(write_fd, EVENT_WRITE):
            plat.binary(write_fd)
            if blocking_writes:
                ready.add(write_fd)
            else:
                self._writer = plat.writer_bridge(write_fd, write_done)
                self.write_fd = self._writer.sock.fileno()
            self.zero_copy = False
        self.always_ready = frozenset(ready)

    def start(self) -> None:
        if self._reader is not None:
            self._reader.start()

    def settled_at(self) -> float:
        return self._reader.settled_at if self._reader is not None else 0.0

    def read_into(self, buf: memoryview) -> int:
        if self._reader is not None:
            return self._reader.read_into(buf)
        assert self.read_fd is not None
        return self._plat.read_into(self.read_fd, buf)

    def pending(self) -> bool:
        return self._reader is not None and self._reader.pending()

    def write(self, data: memoryview) -> int:
        if self._writer is not None:
            return self._writer.sock.send(data)
        assert self.write_fd is not None
        return os.write(self.write_fd, data)

    def write_all(self, data: bytes) -> bool:
        """Write everything, waiting while the destination is full (the
        broker's stdout); False if the destination is gone."""
        view = memoryview(data)
        while view:
            try:
                view = view[self.write(view):]
            except BlockingIOError:
                assert self.write_fd is not None
                self._plat.wait_fd(self.write_fd, EVENT_WRITE, None)
            except OSError:
                return False
        return True

    def _close_bridges(self, flush: bool) -> None:
        """Every byte handed to a writer bridge is written (bounded when not
        flushing: an interrupted run does not wait for a stalled reader)."""
        if self._writer is not None:
            self._writer.close(None if flush else 1.0)
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class StdioStream(FdStream):
    """pync's own stdin and stdout (or the descriptors the library was given).

    The descriptors stay in blocking mode, as nc leaves them: they are shared
    with the shell and other processes, and O_NONBLOCK on a shared terminal
    would break them.  The relay reads only after the wait says readable, so a
    read never blocks; a write to a full pipe waits for the reader, as nc's.
    They are shared by every session of a run; ``finish`` ends them.
    """

    label = "stdio"

    def __init__(self, in_fd: Optional[int], out_fd: Optional[int]) -> None:
        plat = backend()
        for fd in (in_fd, out_fd):
            if fd is not None:
                plat.grow_pipe(fd)
        self._attach(in_fd, out_fd)

    def finish(self, flush: bool = True) -> None:
        """The run is over: what went to stdout is written, bridges end."""
        self._close_bridges(flush)


class SocketStream(Stream):
    """A connected stream socket (TCP or UNIX), non-blocking."""

    nonblocking = True

    def __init__(self, sock: socket.socket, label: str) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.read_fd = self.write_fd = sock.fileno()
        self.label = label

    def read_into(self, buf: memoryview) -> int:
        return self.sock.recv_into(buf)

    def wake_at(self, nbytes: int) -> bool:
        """SO_RCVLOWAT where the platform honours it (TCP on Linux)."""
        return backend().wake_mark(self.sock, nbytes)

    def write(self, data: memoryview) -> int:
        return self.sock.send(data)

    def shutdown_read(self) -> None:
        _shutdown(self.sock, socket.SHUT_RD)

    def shutdown_write(self) -> None:
        _shutdown(self.sock, socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()


class DatagramStream(Stream):
    """A datagram socket: every write is one datagram, every read one message.

    Connected, it talks to one peer.  Unconnected (``-u -l -k``) it receives
    from anyone and sends to whoever sent last.  There is no end of stream
    in datagrams: an empty datagram carries nothing and is skipped.
    """

    datagram = True
    zero_copy = False
    nonblocking = True

    def __init__(self, sock: socket.socket, label: str, connected: bool = True,
                 accept_from: Optional[Callable[[object], bool]] = None) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.read_fd = self.write_fd = sock.fileno()
        self.label = label
        self.connected = connected
        self.peer: Any = None  # the sender of the last datagram (an address)
        self.accept_from = accept_from  # unconnected: which senders (addresses) are heard

    def read_into(self, buf: memoryview) -> int:
        if self.connected:
            n = self.sock.recv_into(buf)
        else:
            try:
                n, peer = self.sock.recvfrom_into(buf)
            except ConnectionResetError:
                # Windows reports an earlier datagram's ICMP refusal on the
                # next receive, even unconnected: nothing to receive here.
                raise BlockingIOError from None
            if self.accept_from is not None and not self.accept_from(peer):
                raise BlockingIOError  # a refused sender: dropped
            self.peer = peer
        if n == 0:
            raise BlockingIOError  # an empty datagram: nothing to pass on
        return n

    def write(self, data: memoryview) -> int:
        if self.connected:
            return self.sock.send(data)
        if self.peer is None:
            raise BlockingIOError
        return self.sock.sendto(data, self.peer)

    def can_write(self) -> bool:
        return self.connected or self.peer is not None

    def close(self) -> None:
        self.sock.close()


def _regular_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass  # already reset or closed by the peer: nothing left to shut
