"""accept() for listeners that must outlive running out of descriptors.

At RLIMIT_NOFILE, accept() fails with EMFILE and the connection stays in
the queue: the listening socket stays readable, so a poll loop would spin
and a plain loop would die.  An ``Acceptor`` keeps one spare descriptor;
on EMFILE it closes the spare, accepts the waiting connection, closes it at
once (refused, reported under -v as ``new connection denied: out of file
descriptors``) and takes the spare back.  When descriptors free up, the
next connection is served as usual.
"""

from __future__ import annotations

import errno
import os
import socket
import time

from ..base.report import Reporter
from ..net.addr import describe_peer, peer_ip
from ..platform import EVENT_READ, backend

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

    from ..relay.hub import Hub
    from .access import AccessList

EXHAUSTED = (errno.EMFILE, errno.ENFILE)
# The client gave up before accept() took it, or a transient kernel error.
TRANSIENT = (errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR, errno.EAGAIN,
             errno.ENOBUFS, errno.ENOMEM)


class Acceptor:
    """Accepts from one listening socket; never fails on EMFILE."""

    def __init__(self, server: socket.socket, report: Reporter) -> None:
        # Non-blocking, always: a blocking accept() at EMFILE fails at once
        # even with nobody waiting (the descriptor is taken first), and the
        # shedding accept() must never wait for a connection to refuse.
        server.setblocking(False)
        self.server = server
        self.report = report
        self.spare: Optional[int] = self._reserve()
        # True after an EMFILE with no spare left to shed it: the caller
        # should stop polling the listener until a descriptor is freed.
        self.starved = False

    @staticmethod
    def _reserve() -> Optional[int]:
        try:
            return os.open(os.devnull, os.O_RDONLY)  # not inherited (PEP 446)
        except OSError:
            return None

    def wait(self, timeout: Optional[float] = None) -> None:
        """Block until a connection is waiting, or timeout seconds (for
        listeners without a loop)."""
        backend().wait_fd(self.server.fileno(), EVENT_READ, timeout)

    def accept(self) -> Optional[tuple[socket.socket, Any]]:
        """The next connection, or None (none waiting, or one refused)."""
        try:
            conn, peer = self.server.accept()
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in EXHAUSTED:
                self._shed()
                return None
            if exc.errno in TRANSIENT:
                return None
            raise
        self.starved = False
        if self.spare is None:
            self.spare = self._reserve()
        return conn, peer

    def _shed(self) -> None:
        """Refuse the waiting connection with the spare descriptor's room."""
        if self.spare is None:
            self.spare = self._reserve()
        if self.spare is None:
            self.starved = True
            return
        os.close(self.spare)
        self.spare = None
        try:
            conn, _ = self.server.accept()
            conn.close()
            self.report.denied("out of file descriptors")
        except OSError:
            pass
        self.spare = self._reserve()
        self.starved = self.spare is None

    def close(self) -> None:
        if self.spare is not None:
            os.close(self.spare)
            self.spare = None


class HubListener:
    """A listening socket in the hub's loop (the forwarder's, the proxy
    server's): every waiting connection is taken at once; those that
    --allow/--deny or --max-conns refuse are closed (said under -v), the
    others handed to ``on_client(sock, where)``.  Out of descriptors, the
    listener rests PAUSE seconds rather than spin."""

    PAUSE = 0.1

    def __init__(self, hub: Hub, server: socket.socket, report: Reporter, access: AccessList,
                 limit: Optional[int], busy: Callable[[], int],
                 on_client: Callable[[socket.socket, str], None],
                 numeric: bool, unix_path: Optional[str] = None) -> None:
        self.hub = hub
        self.server = server
        self.report = report
        self.access = access
        self.limit = limit
        self.busy = busy  # clients being served now
        self.on_client = on_client
        self.numeric = numeric
        self.unix_path = unix_path
        self.acceptor = Acceptor(server, report)
        hub.watch(server.fileno(), EVENT_READ, self)

    def on_ready(self, fd: Optional[int], events: int) -> None:
        while True:
            got = self.acceptor.accept()
            if got is None:
                if self.acceptor.starved:
                    self.hub.watch(self.server.fileno(), 0, self)
                    self.hub.call_at(time.monotonic() + self.PAUSE, self._resume)
                return
            sock, peer = got
            ip = peer_ip(peer)
            if not self.access.permits(ip):
                sock.close()
                self.report.denied(f"not allowed ({ip})")
                continue
            if self.limit is not None and self.busy() >= self.limit:
                sock.close()
                self.report.denied(f"connection limit reached ({self.limit})")
                continue
            where = describe_peer(peer, self.numeric, self.unix_path)
            self.report.received(where)
            sock.setblocking(False)
            try:
                self.on_client(sock, where)
            except Exception as exc:  # that client's setup: it alone is dropped
                self.hub.forget(sock.fileno())
                sock.close()
                self.report.client_failed(where, f"dropped: {exc}")

    def _resume(self) -> None:
        self.hub.watch(self.server.fileno(), EVENT_READ, self)

    def close(self) -> None:
        self.hub.forget(self.server.fileno())
        self.acceptor.close()
