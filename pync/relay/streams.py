"""Streams: the two ends the relay joins.

A Stream is anything with a descriptor to read from and one to write to,
that can be half-closed: stdin/stdout, a TCP or UNIX socket, and later a
datagram socket, a child process's pipes or a TLS session.  The relay only
calls the methods below, so a new kind of end never touches the loop.

Reads go into a caller-owned memoryview (no allocation per read); a read
returns 0 at end of stream and raises BlockingIOError when nothing is ready.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional


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

    def can_write(self) -> bool:
        """False while a write has nowhere to go (no datagram peer yet)."""
        return True

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

    def close(self) -> None:
        """Release what this Stream owns."""

    def interrupt(self) -> None:
        """The session was cut short (a signal): close() should not linger."""

    def wake_at(self, nbytes: int) -> bool:
        """Have poll() report readable only once nbytes wait (or the end of
        stream, or an error); 1 undoes it.  False where this stream cannot."""
        return False


class FdStream(Stream):
    """A Stream on plain descriptors (pipes, files, terminals): readv and write."""

    def read_into(self, buf: memoryview) -> int:
        assert self.read_fd is not None
        return os.readv(self.read_fd, [buf])

    def write(self, data: memoryview) -> int:
        assert self.write_fd is not None
        return os.write(self.write_fd, data)


class StdioStream(FdStream):
    """pync's own stdin and stdout (or the descriptors the library was given).

    The descriptors stay in blocking mode, as nc leaves them: they are shared
    with the shell and other processes, and O_NONBLOCK on a shared terminal
    would break them.  The relay reads only after poll() says readable, so a
    read never blocks; a write to a full pipe waits for the reader, as nc's.
    """

    label = "stdio"

    def __init__(self, in_fd: Optional[int], out_fd: Optional[int]) -> None:
        self.read_fd = in_fd
        self.write_fd = out_fd
        for fd in (in_fd, out_fd):
            if fd is not None:
                grow_pipe(fd)


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
        """SO_RCVLOWAT, on TCP: Linux's poll() honours it there.

        At most a quarter of the receive buffer: a mark the buffer cannot
        hold twice over makes Linux grow the buffer and clamp the window to
        the mark, and a peer then stalls on a delayed window update (40 ms).
        """
        if self.sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        try:
            if nbytes > 1:
                nbytes = min(nbytes, self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 4)
                if nbytes < WAKE_MIN:
                    return False  # the buffer is still small: not worth it yet
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)
        except OSError:
            return False
        return True

    def write(self, data: memoryview) -> int:
        return self.sock.send(data)

    def shutdown_read(self) -> None:
        _shutdown(self.sock, socket.SHUT_RD)

    def shutdown_write(self) -> None:
        _shutdown(self.sock, socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()


WAKE_MIN = 64 * 1024  # a smaller mark saves too few wake-ups to bother
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1024 * 1024


def grow_pipe(fd: int) -> None:
    """Enlarge a pipe to 1 MiB (the unprivileged maximum) if fd is one.

    A 64 KiB pipe caps every read at 64 KiB; a bigger pipe lets each system
    call move more, which is most of a bulk transfer's cost.
    """
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # not allowed (pipe-max-size) or not a pipe: keep its size


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
        self.peer: Optional[object] = None
        self.accept_from = accept_from  # unconnected: which senders (addresses) are heard

    def read_into(self, buf: memoryview) -> int:
        if self.connected:
            n = self.sock.recv_into(buf)
        else:
            n, peer = self.sock.recvfrom_into(buf)
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


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass  # already reset or closed by the peer: nothing left to shut


def same_host(sock: socket.socket) -> bool:
    """Is this connected socket's peer on this host (loopback, our own
    address, or a UNIX socket)?  Then no network lies between the two ends:
    the receiver reads the sender's pages, and nothing needs pacing."""
    if sock.family == socket.AF_UNIX:
        return True
    try:
        peer = sock.getpeername()[0]
        return (peer.startswith(("127.", "::ffff:127.")) or peer == "::1"
                or peer == sock.getsockname()[0])
    except OSError:
        return False
