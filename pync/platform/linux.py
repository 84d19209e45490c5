"""The Linux backend: poll, epoll, splice, sendfile, SO_RCVLOWAT, fork.

Chosen wherever ``select.epoll`` exists.  What each fast path is for:

* The relay waits with bare ``select.poll``, not through ``selectors``:
  poll() accepts regular files and /dev/null (always ready) where epoll
  refuses them, with two or three descriptors it needs no system call to
  change interest, and selectors' per-event objects cost more than the
  system call in a 1-byte ping-pong.  Waking a sleeping process costs more
  here than a reply takes to come, so the relay spins briefly in a dialogue.
* The scanner waits with epoll: closing a socket removes it from the set,
  so a finished probe costs one close and nothing else.
* Bytes move with splice() through a pipe pync owns, and with sendfile()
  from a file to a socket: they never enter Python.
* SO_RCVLOWAT lets a bulk receiver wake once per batch instead of once per
  segment; a same-host TCP socket is asked not to pace (BBR arms a timer
  per burst).
* Workers are forked.
"""

from __future__ import annotations

import fcntl
import math
import os
import select
import socket
import stat
import struct
import sys

from .base import EVENT_READ, EVENT_WRITE, Backend, ProbeSet, Waiter

# Chosen only where select.epoll exists (Linux): never on Windows or macOS,
# which a type checker for those platforms can skip from here on.
assert sys.platform != "win32" and sys.platform != "darwin"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

_POLL = {EVENT_READ: select.POLLIN, EVENT_WRITE: select.POLLOUT,
         EVENT_READ | EVENT_WRITE: select.POLLIN | select.POLLOUT}
_NOT_OUT = ~select.POLLOUT
_NOT_IN = ~select.POLLIN
_EPOLL = {EVENT_READ: select.EPOLLIN, EVENT_WRITE: select.EPOLLOUT,
          EVENT_READ | EVENT_WRITE: select.EPOLLIN | select.EPOLLOUT}
_NOT_EPOLLOUT = ~select.EPOLLOUT
_NOT_EPOLLIN = ~select.EPOLLIN
F_SETPIPE_SZ = 1031
SIOCOUTQ = 0x5411  # TIOCOUTQ: a socket's unsent bytes
F_GETPIPE_SZ = 1032
PIPE_SIZE = 1024 * 1024   # the unprivileged maximum of a pipe's buffer
WAKE_MIN = 64 * 1024      # a smaller SO_RCVLOWAT mark saves too few wake-ups to bother
_SPLICE = getattr(os, "splice", None)   # Python >= 3.10
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_DEV_NULL = os.makedev(1, 3)
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", None)
IP_MINTTL = getattr(socket, "IP_MINTTL", 21)
IPV6_MINHOPCOUNT = 73
TCP_MD5SIG_EXT = 32
TCP_MD5SIG_FLAG_PREFIX = 1
TCP_MD5SIG_MAXKEYLEN = 80
MAX_WAIT_MS = 86400 * 1000


class PollWaiter(Waiter):
    """select.poll, used bare."""

    spins = True

    def __init__(self) -> None:
        self._poll = select.poll()

    def register(self, fd: int, events: int) -> None:
        self._poll.register(fd, _POLL[events])

    def modify(self, fd: int, events: int) -> None:
        self._poll.modify(fd, _POLL[events])

    def unregister(self, fd: int) -> None:
        self._poll.unregister(fd)

    def poll(self, timeout: Optional[float]) -> list[tuple[int, int]]:
        ready = self._poll.poll(None if timeout is None else
                                min(math.ceil(timeout * 1e3), MAX_WAIT_MS))
        # As selectors: hang-up and errors wake both readers and writers.
        return [(fd, (EVENT_READ if ev & _NOT_OUT else 0) | (EVENT_WRITE if ev & _NOT_IN else 0))
                for fd, ev in ready]


class EpollWaiter(Waiter):
    """epoll, for loops of many descriptors (the hub): poll() would scan
    them all at every wait."""

    def __init__(self) -> None:
        self._epoll = select.epoll()

    def register(self, fd: int, events: int) -> None:
        self._epoll.register(fd, _EPOLL[events])

    def modify(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, _EPOLL[events])

    def unregister(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # closed already: epoll forgot it by itself

    def poll(self, timeout: Optional[float]) -> list[tuple[int, int]]:
        ready = self._epoll.poll(-1 if timeout is None else min(timeout, 86400.0), 1024)
        return [(fd, (EVENT_READ if ev & _NOT_EPOLLOUT else 0)
                 | (EVENT_WRITE if ev & _NOT_EPOLLIN else 0)) for fd, ev in ready]

    def close(self) -> None:
        self._epoll.close()


class EpollProbes(ProbeSet):
    """epoll: a closed socket leaves the set by itself."""

    def __init__(self) -> None:
        self._epoll = select.epoll()

    def add(self, fd: int, writable: bool) -> None:
        self._epoll.register(fd, select.EPOLLOUT if writable else select.EPOLLIN)

    def forget(self, fd: int) -> None:
        pass  # close() removes it

    def poll(self, timeout: float) -> list[int]:
        return [fd for fd, _ in self._epoll.poll(timeout, 1024)]

    def close(self) -> None:
        self._epoll.close()


class LinuxBackend(Backend):
    name = "linux"
    abstract_unix = True
    md5sig = True
    min_ttl = True
    zero_copy = _SPLICE is not None
    sendfile_to_socket = True
    can_fork = True

    # -- waiting ----------------------------------------------------------
    def waiter(self) -> Waiter:
        return PollWaiter()

    def many_waiter(self) -> Waiter:
        return EpollWaiter()

    def wait_fd(self, fd: int, events: int, timeout: Optional[float]) -> int:
        poller = select.poll()
        poller.register(fd, _POLL[events])
        ready = poller.poll(None if timeout is None else max(timeout, 0.0) * 1000)
        if not ready:
            return 0
        ev = ready[0][1]
        return (EVENT_READ if ev & _NOT_OUT else 0) | (EVENT_WRITE if ev & _NOT_IN else 0)

    def sleep(self, seconds: float) -> None:
        select.poll().poll(min(math.ceil(max(seconds, 0.0) * 1e3), MAX_WAIT_MS))

    def probe_set(self) -> ProbeSet:
        return EpollProbes()

    def nonblocking_socket(self, family: int, socktype: int, proto: int) -> socket.socket:
        return socket.socket(family, socktype | socket.SOCK_NONBLOCK, proto)  # one call, not two

    # -- moving bytes -----------------------------------------------------
    def grow_pipe(self, fd: int) -> None:
        """A 64 KiB pipe caps every read at 64 KiB; a bigger pipe lets each
        system call move more, which is most of a bulk transfer's cost."""
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # not allowed (pipe-max-size) or not a pipe: keep its size

    def wake_mark(self, sock: socket.socket, nbytes: int) -> bool:
        """SO_RCVLOWAT, on TCP: Linux's poll() honours it there.

        At most a quarter of the receive buffer: a mark the buffer cannot
        hold twice over makes Linux grow the buffer and clamp the window to
        the mark, and a peer then stalls on a delayed window update (40 ms).
        """
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        try:
            if nbytes > 1:
                nbytes = min(nbytes, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 4)
                if nbytes < WAKE_MIN:
                    return False  # the buffer is still small: not worth it yet
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)
        except OSError:
            return False
        return True

    def unpaced(self, sock: socket.socket) -> None:
        """If the system's congestion control paces (BBR), ask for cubic (or
        reno, which anyone may choose) on this one socket: no network lies
        between the ends, and pacing costs a timer per burst (1 GiB over
        loopback took ~20% longer with BBR here).  Anything else is left as
        the system set it."""
        if TCP_CONGESTION is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        try:
            current = sock.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16)
        except OSError:
            return
        if not current.startswith(b"bbr") or not self.same_host(sock):
            return
        for name in (b"cubic", b"reno"):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, name)
                return
            except OSError:
                continue  # not allowed to this user, or not built: the next one

    def unsent(self, sock: socket.socket) -> Optional[int]:
        """Bytes in sock's send queue not yet acknowledged (SIOCOUTQ)."""
        try:
            return struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0" * 4))[0]
        except OSError:
            return None

    def set_md5sig(self, sock: socket.socket, family: int, key: bytes) -> None:
        """-S: struct tcp_md5sig with a zero-length prefix: sign for every peer.

        The address is a sockaddr_storage holding only the family; with
        TCP_MD5SIG_FLAG_PREFIX and prefix length 0 it matches any peer.
        """
        key = key[:TCP_MD5SIG_MAXKEYLEN]
        addr = struct.pack("=H", family) + bytes(126)
        value = addr + struct.pack("=BBHi", TCP_MD5SIG_FLAG_PREFIX, 0, len(key), 0)
        value += key + bytes(TCP_MD5SIG_MAXKEYLEN - len(key))
        sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG_EXT, value)

    def set_min_ttl(self, sock: socket.socket, family: int, ttl: int) -> None:
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_MINTTL, ttl)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MINHOPCOUNT, ttl)

    def splice(self, src: int, dst: int, count: int) -> int:
        assert _SPLICE is not None
        return _SPLICE(src, dst, count, flags=_SPLICE_FLAGS)

    def new_pipe(self, grown: bool = True) -> tuple[int, int, int]:
        r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            size = self.grow_pipe_to(w) if grown else fcntl.fcntl(w, F_GETPIPE_SZ)
        except OSError:
            os.close(r)
            os.close(w)
            raise
        return r, w, size

    def grow_pipe_to(self, w: int) -> int:
        """Make a pipe of pync's 1 MiB (each costs the user's pipe quota:
        64 MiB by default); its size then."""
        try:
            return fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            return fcntl.fcntl(w, F_GETPIPE_SZ)

    def can_splice(self, fd: Optional[int], writing: bool) -> bool:
        """Can splice() move data from (or to) this descriptor?

        Pipes, stream sockets and regular files (not opened O_APPEND for
        writing) can, and /dev/null as a destination; terminals and other
        character devices cannot.
        """
        if fd is None:
            return False
        try:
            st = os.fstat(fd)
        except OSError:
            return False
        if stat.S_ISFIFO(st.st_mode):
            return True
        if stat.S_ISSOCK(st.st_mode):
            try:
                kind = socket.socket(fileno=os.dup(fd))
            except OSError:
                return False
            try:
                return kind.type == socket.SOCK_STREAM
            finally:
                kind.close()
        appending = writing and bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)
        if stat.S_ISREG(st.st_mode):
            return not appending  # splice() refuses O_APPEND (EINVAL)
        # /dev/null takes splice() and drops the pages: a receiver writing there
        # (a throughput test) never copies the bytes into Python; but not when
        # opened O_APPEND (``>>/dev/null``), which splice() refuses there too.
        return (writing and not appending and stat.S_ISCHR(st.st_mode)
                and st.st_rdev == _DEV_NULL)

    def sendfile(self, out_fd: int, in_fd: int, count: int) -> int:
        return os.sendfile(out_fd, in_fd, None, count)

    # -- workers ----------------------------------------------------------
    def fork(self) -> int:
        return os.fork()

    def reap(self, pid: int, block: bool) -> Optional[int]:
        try:
            done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return 0  # already reaped elsewhere
        return os.waitstatus_to_exitcode(status) if done else None

    def on_child_exit(self, callback: Callable[[], None]) -> Callable[[], None]:
        import signal

        try:
            old = signal.signal(signal.SIGCHLD, lambda *_: callback())
        except ValueError:  # not the main thread (library use): reap as we go
            return lambda: None

        def undo() -> None:
            signal.signal(signal.SIGCHLD, old)
        return undo

    def terminate(self, pid: int) -> None:
        import signal

        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
