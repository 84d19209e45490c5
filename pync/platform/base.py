"""The Backend interface: everything pync asks of the platform, in one place.

Methods that read the same on every platform are written here once; a
backend overrides what it does differently (linux.py its fast paths,
portable.py its selectors, bridges and spawned workers).  Callers never
test what platform they are on: they ask the backend, or one of its
feature flags.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from ..base.report import PyncError
from .events import EVENT_READ, EVENT_WRITE

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Callable, Optional

    from .bridge import ReaderBridge, WriterBridge

_READV = getattr(os, "readv", None)
# connect_ex() on a non-blocking socket that is on its way: EINPROGRESS, or
# Windows' WSAEWOULDBLOCK.
CONNECT_IN_PROGRESS = frozenset({errno.EINPROGRESS,
                                 getattr(errno, "WSAEWOULDBLOCK", errno.EINPROGRESS)})
_SET_BLOCKING = getattr(os, "set_blocking", None)
_O_NOCTTY: Optional[int] = getattr(os, "O_NOCTTY", None)
AF_UNIX: Optional[int] = getattr(socket, "AF_UNIX", None)
O_BINARY: int = getattr(os, "O_BINARY", 0)  # os.open() flag: no CRLF translation (Windows)


class Waiter:
    """The relay's wait: descriptors with EVENT_READ/EVENT_WRITE interest.

    ``poll`` returns ``(fd, events)`` pairs; a hang-up or an error wakes
    both a reader and a writer, as selectors reports them.  ``spins``:
    whether a brief busy poll before sleeping pays off in a dialogue (the
    relay's spin, see relay/loop.py).
    """

    spins = False

    def register(self, fd: int, events: int) -> None:
        raise NotImplementedError

    def modify(self, fd: int, events: int) -> None:
        raise NotImplementedError

    def unregister(self, fd: int) -> None:
        raise NotImplementedError

    def poll(self, timeout: Optional[float]) -> list[tuple[int, int]]:
        """Wait up to timeout seconds (None: without end) for the interest."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the wait's own resources."""


class ProbeSet:
    """The scanner's wait: many sockets at once, each forgotten before close.

    ``capacity`` is how many it can hold at once (None: no limit of its own;
    select() on Windows takes 512 sockets at most).
    """

    capacity: Optional[int] = None

    def add(self, fd: int, writable: bool) -> None:
        """Wait for fd to become writable (a connect) or readable (a reply)."""
        raise NotImplementedError

    def forget(self, fd: int) -> None:
        """fd is about to be closed."""
        raise NotImplementedError

    def poll(self, timeout: float) -> list[int]:
        """The descriptors ready within timeout seconds."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class Backend:
    """What differs between platforms.  Flags say what the platform offers;
    methods do what pync needs done there."""

    name = "base"
    # Features of the command line a platform may lack ("-U is not
    # available on this platform" where False).
    unix_sockets = AF_UNIX is not None         # -U
    abstract_unix = False                      # -U @name (Linux's abstract namespace)
    fd_passing = hasattr(socket, "send_fds")   # -F (SCM_RIGHTS)
    md5sig = False                             # -S (TCP_MD5SIG)
    tos = hasattr(socket, "IP_TOS")            # -T
    min_ttl = False                            # -m (IP_MINTTL)
    # Moving bytes: splice() through a pipe of pync's own, sendfile() from
    # a file to a socket (both used only where these are True).
    zero_copy = False
    sendfile_to_socket = False
    # Processes: fork() for workers (else they are spawned), and the
    # signals a child can be sent.
    can_fork = False

    # -- waiting ----------------------------------------------------------
    def waiter(self) -> Waiter:
        """The relay's wait: a handful of descriptors, woken fast."""
        raise NotImplementedError

    def many_waiter(self) -> Waiter:
        """A wait for thousands of descriptors at once (the hub's)."""
        return self.waiter()

    def abort(self, sock: socket.socket) -> None:
        """Close sock with a reset (SO_LINGER 0): the peer sees RST, not FIN."""
        import struct

        try:
            # struct linger: two ints on POSIX, two u_shorts on Windows
            fmt = "HH" if hasattr(socket.socket, "share") else "ii"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack(fmt, 1, 0))
        except OSError:
            pass
        sock.close()

    def unsent(self, sock: socket.socket) -> Optional[int]:
        """Bytes sock still has to send, where the platform says (else None)."""
        return None

    def raise_fd_limit(self, wanted: int) -> None:
        """Let this process open up to wanted descriptors, if the hard limit allows."""
        try:
            import resource
        except ImportError:  # Windows: sockets are not counted against such a limit
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # type: ignore[attr-defined,unused-ignore]
        top = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)  # type: ignore[attr-defined,unused-ignore]
        if soft != resource.RLIM_INFINITY and soft < top:  # type: ignore[attr-defined,unused-ignore]
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))  # type: ignore[attr-defined,unused-ignore]
            except (OSError, ValueError):
                pass

    def watch_signals(self) -> None:
        """The pync command handles signals: make sure they end every wait."""

    def wait_fd(self, fd: int, events: int, timeout: Optional[float]) -> int:
        """Wait (bounded by timeout seconds, None: without end) for events on
        one descriptor; the events that came, 0 if none did."""
        waiter = self.waiter()
        try:
            waiter.register(fd, events)
            ready = waiter.poll(None if timeout is None else max(timeout, 0.0))
        finally:
            waiter.close()
        return ready[0][1] if ready else 0

    def sleep(self, seconds: float) -> None:
        """Wait for a deadline with no descriptor to watch (-q, -i)."""
        import time

        time.sleep(max(seconds, 0.0))

    def probe_set(self) -> ProbeSet:
        raise NotImplementedError

    def nonblocking_socket(self, family: int, socktype: int, proto: int) -> socket.socket:
        """A new socket that never blocks (a scan's probe)."""
        sock = socket.socket(family, socktype, proto)
        sock.setblocking(False)
        return sock

    def fd_limit(self) -> Optional[int]:
        """The soft limit on open descriptors, if the platform has one."""
        try:
            import resource
        except ImportError:  # Windows
            return None
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)  # type: ignore[attr-defined,unused-ignore]
        return None if soft == resource.RLIM_INFINITY else soft  # type: ignore[attr-defined,unused-ignore]

    def can_wait(self, fd: int, events: int) -> bool:
        """Can this platform's wait take fd directly (else it is bridged)?"""
        return True

    # -- moving bytes -----------------------------------------------------
    def read_into(self, fd: int, buf: memoryview) -> int:
        """One read from a plain descriptor into buf (no allocation where
        readv() exists)."""
        if _READV is not None:
            return _READV(fd, [buf])
        data = os.read(fd, len(buf))
        buf[:len(data)] = data
        return len(data)

    def grow_pipe(self, fd: int) -> None:
        """Make a pipe's buffer as large as allowed (where that can be set)."""

    def wake_mark(self, sock: socket.socket, nbytes: int) -> bool:
        """Have the wait report sock readable only once nbytes wait
        (SO_RCVLOWAT); 1 undoes it.  False where this cannot be done."""
        return False

    def unpaced(self, sock: socket.socket) -> None:
        """A TCP connection between two ends on this host: no pacing."""

    def same_host(self, sock: socket.socket) -> bool:
        """Is this connected socket's peer on this host (loopback, our own
        address, or a UNIX socket)?  Then no network lies between the two
        ends: the receiver reads the sender's pages, and nothing needs pacing."""
        if AF_UNIX is not None and sock.family == AF_UNIX:
            return True
        try:
            peer = sock.getpeername()[0]
            return (peer.startswith(("127.", "::ffff:127.")) or peer == "::1"
                    or peer == sock.getsockname()[0])
        except OSError:
            return False

    def set_md5sig(self, sock: socket.socket, family: int, key: bytes) -> None:
        """-S (where ``md5sig``): sign every segment to any peer with key."""
        raise NotImplementedError

    def set_min_ttl(self, sock: socket.socket, family: int, ttl: int) -> None:
        """-m (where ``min_ttl``): drop what arrives with a smaller TTL."""
        if family == socket.AF_INET:
            level, name = socket.IPPROTO_IP, getattr(socket, "IP_MINTTL", None)
        else:
            level, name = socket.IPPROTO_IPV6, getattr(socket, "IPV6_MINHOPCOUNT", None)
        if name is None:
            raise OSError(errno.ENOPROTOOPT, os.strerror(errno.ENOPROTOOPT))
        sock.setsockopt(level, name, ttl)

    def splice(self, src: int, dst: int, count: int) -> int:
        raise NotImplementedError

    def new_pipe(self, grown: bool = True) -> tuple[int, int, int]:
        """A non-blocking pipe of pync's own: (read end, write end, size);
        ``grown``: as large as allowed, else as the system makes it."""
        raise NotImplementedError

    def grow_pipe_to(self, w: int) -> int:
        """Make such a pipe as large as allowed; its size then."""
        raise NotImplementedError

    def can_splice(self, fd: Optional[int], writing: bool) -> bool:
        return False

    def sendfile(self, out_fd: int, in_fd: int, count: int) -> int:
        raise NotImplementedError

    # -- local ends -------------------------------------------------------
    def reader_bridge(self, fd: int, done: Optional[Callable[[], None]] = None) -> ReaderBridge:
        from .bridge import ReaderBridge

        return ReaderBridge(fd, done)

    def writer_bridge(self, fd: int, done: Optional[Callable[[], None]] = None) -> WriterBridge:
        from .bridge import WriterBridge

        return WriterBridge(fd, done)

    def start_child(self, argv: tuple[str, ...], env: dict[str, str]) -> subprocess.Popen:
        """A child with its stdin and stdout on pipes pync owns; stderr stays
        pync's.  No descriptor of pync's is inherited."""
        import subprocess

        return subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                close_fds=True, env=env)

    def prepare_pipe(self, fd: int) -> None:
        """A pipe to a child that the wait takes directly: never block on it."""
        if _SET_BLOCKING is not None:
            _SET_BLOCKING(fd, False)
        self.grow_pipe(fd)

    def shell_argv(self, command: str) -> tuple[str, ...]:
        """-c: the argv that runs command through the platform's shell."""
        return ("/bin/sh", "-c", command)

    # -- workers ----------------------------------------------------------
    def fork(self) -> int:
        """fork(): 0 in the child, the child's pid in the parent."""
        raise PyncError("fork is not available on this platform")

    def reap(self, pid: int, block: bool) -> Optional[int]:
        """A forked worker's exit status once it has ended (None: still
        running; block: wait for it)."""
        raise NotImplementedError

    def default_signals(self) -> None:
        """In a forked worker: ^C and SIGTERM end it at once, no handler."""
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)

    def on_child_exit(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call callback when a forked worker ends; returns the undo."""
        return lambda: None

    def terminate(self, pid: int) -> None:
        """Ask a forked worker to end (SIGTERM)."""
        raise NotImplementedError

    def spawn_worker(self, argv: list[str], conn: socket.socket
                     ) -> tuple[subprocess.Popen, dict[str, object]]:
        """Start a new interpreter (stdin a pipe for its job) that will
        serve conn; returns it and how it finds conn (``adopt_socket``).

        POSIX: the descriptor is inherited.  Windows: ``socket.share()``
        for the new process, the bytes sent with its job.
        """
        import subprocess

        share = getattr(conn, "share", None)  # Windows only
        if share is None:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, pass_fds=(conn.fileno(),))
            return proc, {"fd": conn.fileno()}
        import base64

        proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
        return proc, {"share": base64.b64encode(share(proc.pid)).decode("ascii")}

    def adopt_socket(self, handle: dict[str, object]) -> socket.socket:
        """The socket a spawned worker was handed (see spawn_worker)."""
        if "share" in handle:
            import base64

            fromshare = getattr(socket, "fromshare")  # noqa: B009 - Windows only
            return fromshare(base64.b64decode(str(handle["share"])))
        fd = handle["fd"]
        assert isinstance(fd, int)
        return socket.socket(fileno=fd)

    def send_fd(self, out: socket.socket, fd: int) -> None:
        """-F: pass fd over the UNIX socket out (SCM_RIGHTS), with one byte."""
        getattr(socket, "send_fds")(out, [b"\0"], [fd])  # noqa: B009 - POSIX only

    # -- terminals --------------------------------------------------------
    def ask_secret(self, prompt: str, failure: str) -> str:
        """Read a secret on the terminal (never from stdin, which carries data).

        Where terminals are devices (POSIX), without a controlling terminal
        it fails at once, as nc's readpassphrase() does; on Windows getpass
        reads the console.
        """
        import getpass

        if _O_NOCTTY is not None:
            try:
                os.close(os.open("/dev/tty", os.O_RDWR | _O_NOCTTY))
            except OSError:
                raise PyncError(failure) from None
        try:
            return getpass.getpass(prompt)
        except (OSError, EOFError, getpass.GetPassWarning):
            raise PyncError(failure) from None

    def binary(self, fd: int) -> None:
        """Bytes through fd untranslated (Windows' text mode turns LF into CRLF)."""


def is_socket(fd: Optional[int]) -> bool:
    try:
        return fd is not None and stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


__all__ = ["EVENT_READ", "EVENT_WRITE", "Backend", "ProbeSet", "Waiter", "is_socket"]
