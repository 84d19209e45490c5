"""An outbound connection made in the hub's loop, without blocking it.

The forwarder and the proxy server open one connection per client, a
thousand at once: each is a Connector that tries the destination's
addresses in turn (a non-blocking connect, bounded by -w), and with -x
runs the proxy's handshake (protocols/proxy.py) over the new socket,
before it hands the socket over with the bytes that came after the
proxy's reply.  Failures are reported as nc reports them under -v
(``connect to H port P (tcp) failed: Connection refused``).
"""

from __future__ import annotations

import errno
import socket
import time

from ..base.report import PyncError, Reporter, strerror
from ..net import sockopts
from ..net.addr import numeric_host
from ..platform import EVENT_READ, EVENT_WRITE
from ..platform.base import CONNECT_IN_PROGRESS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

    from ..base.options import Options
    from ..net.addr import AddrInfo
    from ..protocols.proxy import Handshake
    from ..relay.hub import Hub, Timer

CONNECT_TIMEOUT = 30.0  # without -w: a connect is not waited for longer


class Connector:
    """Connect to ``addrs`` (then through ``handshake``, if given); call
    ``on_done(sock, leftover)`` or ``on_fail(reason, errno)`` once."""

    def __init__(self, hub: Hub, addrs: list[AddrInfo], opts: Options, report: Reporter,
                 name: str, port: int, on_done: Callable[[socket.socket, bytes], None],
                 on_fail: Callable[[str, int], None],
                 handshake: Optional[Callable[[], Handshake]] = None) -> None:
        self.hub = hub
        self.addrs = list(addrs)
        self.opts = opts
        self.report = report
        self.name = name
        self.port = port
        self.on_done = on_done
        self.on_fail = on_fail
        self.new_handshake = handshake  # a new one for each proxy address tried
        self.handshake: Optional[Handshake] = None
        self.sock: Optional[socket.socket] = None
        self.ip = ""
        self.out = b""  # handshake bytes not yet sent
        self.timer: Optional[Timer] = None
        self.timeout = float(opts.wait) if opts.wait else CONNECT_TIMEOUT
        self.last_error = errno.ECONNREFUSED
        self.shaking = False  # connected: the proxy's handshake runs
        self.over = False
        self._next()

    def _next(self) -> None:
        """Begin the connect to the next address, or fail if none is left."""
        while self.addrs:
            family, socktype, proto, _, sockaddr = self.addrs.pop(0)
            self.ip = numeric_host(sockaddr)
            try:
                sock = socket.socket(family, socktype, proto)
            except OSError as exc:
                self.last_error = exc.errno or errno.EMFILE
                continue
            try:
                sock.setblocking(False)
                sockopts.bind_source(sock, self.opts, family)
                sockopts.apply(sock, family, self.opts)
                err = sock.connect_ex(sockaddr)
            except (OSError, PyncError) as exc:
                sock.close()
                self._finish_fail(str(exc) if isinstance(exc, PyncError) else
                                  f"connect to {self.name} port {self.port}: {exc}",
                                  getattr(exc, "errno", None) or errno.EIO)
                return
            self.sock = sock
            if err == 0:
                self._connected()
                return
            if err not in CONNECT_IN_PROGRESS:
                self._address_failed(err)
                continue
            self.hub.watch(sock.fileno(), EVENT_WRITE, self)
            self.timer = self.hub.call_at(time.monotonic() + self.timeout, self._timed_out)
            return
        self._finish_fail(f"connect to {self.name} port {self.port} failed", self.last_error)

    def on_ready(self, fd: Optional[int], events: int) -> None:
        if self.over or self.sock is None:
            return
        if self.shaking:
            self._shake()
            return
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._address_failed(err)
            self._next()
            return
        try:
            self.sock.getpeername()
        except OSError:
            return  # not connected yet (an event meant for another): wait on
        self._connected()

    def failed(self, exc: BaseException) -> None:
        if not self.over:  # else it was handed over: on_done's trouble, not ours
            self._finish_fail(str(exc), getattr(exc, "errno", None) or errno.EIO)

    def _address_failed(self, err: int) -> None:
        """One address refused (or timed out): say so under -v, as nc."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sock is not None:
            self.hub.forget(self.sock.fileno())
            self.sock.close()
            self.sock = None
        self.last_error = err
        exc = socket.timeout("timed out") if err == errno.ETIMEDOUT else OSError(err, "")
        if not self.port:  # a UNIX socket: nc names just the path
            if self.report.verbose:
                self.report.warn(f"{self.name}: {strerror(exc)}")
            return
        self.report.connect_failed(self.name, self.ip, self.port, "tcp", exc)

    def _timed_out(self) -> None:
        self.timer = None
        if self.over:
            return
        self.shaking = False  # the next address starts with a connect, and a new handshake
        self._address_failed(errno.ETIMEDOUT)
        self._next()

    def _connected(self) -> None:
        if self.new_handshake is None:
            self._finish_done(b"")
            return
        self.shaking = True
        self.handshake = self.new_handshake()
        self.out = self.handshake.start()
        self._shake()

    def _shake(self) -> None:
        """The proxy's handshake: send what it asks, feed what comes back."""
        from ..protocols.proxy import ProxyError

        assert self.sock is not None and self.handshake is not None
        try:
            while self.out:
                self.out = self.out[self.sock.send(self.out):]
            while not self.handshake.done:
                data = self.sock.recv(65536)
                if not data:
                    self.handshake.eof()
                self.out += self.handshake.feed(data)
                while self.out:
                    self.out = self.out[self.sock.send(self.out):]
        except (BlockingIOError, InterruptedError):
            self.hub.watch(self.sock.fileno(), EVENT_WRITE if self.out else EVENT_READ, self)
            return
        except ProxyError as exc:
            self._finish_fail(str(exc), errno.ECONNREFUSED)
            return
        except OSError as exc:
            self._finish_fail(f"proxy: {exc.strerror or exc}", exc.errno or errno.EIO)
            return
        self._finish_done(self.handshake.leftover)

    def _finish_done(self, leftover: bytes) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.over = True
        sock, self.sock = self.sock, None
        assert sock is not None
        self.hub.forget(sock.fileno())
        self.on_done(sock, leftover)

    def _finish_fail(self, reason: str, err: int) -> None:
        self._release()
        self.on_fail(reason, err)

    def cancel(self) -> None:
        """The client went away first: stop, close what was opened."""
        if not self.over:
            self._release()

    def _release(self) -> None:
        """Over: the timer stopped, the attempt's socket closed."""
        self.over = True
        if self.timer is not None:
            self.timer.cancel()
        if self.sock is not None:
            self.hub.forget(self.sock.fileno())
            self.sock.close()
            self.sock = None

