"""-l -X connect|5|4: pync as a proxy server (HTTP, SOCKS5, SOCKS4/4a).

``pync -l 3128 -X connect`` serves HTTP proxy requests as ncat's
``--proxy-type http`` does: CONNECT, and GET, HEAD or POST of an absolute
URI (sent on to the origin server); ``-X 5`` is a SOCKS5 server (CONNECT to
an IPv4 or IPv6 address or a name), ``-X 4`` SOCKS4 and 4a.  With
``--proxy-auth user:password`` every client must give them (HTTP Basic,
SOCKS5 RFC 1929); the password is never printed, even under -vv.

Each client is a ProxiedClient in the hub's loop (relay/hub.py): its
request read and parsed (protocols/proxy_server.py), bounded by -w; the
destination's name resolved off the loop (net/resolver.py) and connected
to (modes/outbound.py); the reply sent; then a Pair joins the two, as the
forwarder's, by splice() on Linux.  A refused request gets the protocol's
answer (``407``, SOCKS5 ``command not supported``) before it is closed.

A proxy that anyone can reach is an open relay: listening on anything but
loopback without --allow or --proxy-auth, pync says so (and still starts,
as ncat does).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import time

from ..base.report import PyncError, Reporter
from ..net.resolver import Resolver, numeric
from ..platform import EVENT_READ, backend
from ..platform.signals import SignalsDeferred
from ..protocols.proxy_server import NAME_NOT_FOUND, Refused, new_request
from ..relay.hub import Hub
from ..relay.pair import Pair
from ..relay.streams import SocketStream
from .accepting import HubListener
from .access import AccessList
from .forward import DEFAULT_MAX_CONNS, FD_WANTED
from .listen import inet_listener
from .outbound import Connector

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Union

    from ..base.options import Options
    from ..net.addr import AddrInfo
    from ..net.resolver import Lookup
    from ..relay.hub import Timer

REQUEST_TIMEOUT = 30.0  # without -w: a client has this long to ask...
CONNECT_TIMEOUT = 30.0  # ... and its destination, to be looked up and answer
LINGER = 2.0            # a refused client's answer gets this long to leave
KINDS = {"connect": "HTTP", "5": "SOCKS5", "4": "SOCKS4"}


def run_proxy_server(opts: Options, report: Reporter) -> int:
    """Serve proxy requests until interrupted (^C: 130, SIGTERM: 143)."""
    plat = backend()
    plat.raise_fd_limit(FD_WANTED)
    credentials = _credentials(opts)
    access = AccessList(opts.allow, opts.deny)
    tls_context = None
    if opts.ssl:
        from . import tls
        tls_context = tls.server_context(opts, report)[0]
    hub = Hub()
    server = inet_listener(opts, report, opts.host, opts.ports[0], socket.SOMAXCONN)
    listener = resolver = None
    try:
        _warn_if_open(server, access, credentials, report)
        resolver = Resolver(hub)
        proxy = ProxyServer(hub, opts, report, credentials, resolver, tls_context)
        listener = HubListener(hub, server, report, access, opts.max_conns or DEFAULT_MAX_CONNS,
                               lambda: proxy.live, proxy.serve, opts.numeric)
        hub.run()
    finally:
        with SignalsDeferred():
            if listener is not None:
                listener.close()
            if resolver is not None:
                resolver.close()
            server.close()
    return 0


def _credentials(opts: Options) -> Optional[tuple[str, str]]:
    """--proxy-auth user:password (the password also from PYNC_PROXY_PASSWORD)."""
    if opts.proxy_user is None:
        return None
    password = opts.proxy_password
    if password is None:
        password = os.environ.get("PYNC_PROXY_PASSWORD")
    if password is None:
        raise PyncError("a proxy server needs --proxy-auth user:password "
                        "(or the password in PYNC_PROXY_PASSWORD)")
    return opts.proxy_user, password


def _warn_if_open(server: socket.socket, access: AccessList,
                  credentials: Optional[tuple[str, str]], report: Reporter) -> None:
    """An open relay is one mistake away: say so when it is one."""
    if access.active or credentials is not None:
        return
    host = server.getsockname()[0]
    try:
        loopback = ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        report.warn(f"warning: a proxy on {host} port {server.getsockname()[1]} serves "
                    "anyone who can reach it (--allow or --proxy-auth restricts it)")


class ProxyServer:
    """What every client of the proxy shares."""

    def __init__(self, hub: Hub, opts: Options, report: Reporter,
                 credentials: Optional[tuple[str, str]], resolver: Resolver,
                 tls_context: Any) -> None:
        self.hub = hub
        self.opts = opts
        self.report = report
        self.credentials = credentials
        self.resolver = resolver
        self.tls_context = tls_context
        self.kind = opts.proxy_type or "5"
        self.live = 0

    def serve(self, sock: socket.socket, where: str) -> None:
        ProxiedClient(self, sock, where)


class ProxiedClient:
    """One client: its request, the destination, the reply, then the Pair."""

    def __init__(self, server: ProxyServer, sock: socket.socket, where: str) -> None:
        self.server = server
        self.hub = server.hub
        self.sock = sock
        self.where = where
        self.stream: Union[SocketStream, Any] = SocketStream(sock, where)
        self.request = new_request(server.kind, server.credentials)
        self.out = bytearray()   # our answers not yet sent
        self.tls: Any = None
        self.lookup: Optional[Lookup] = None
        self.connector: Optional[Connector] = None
        self.phase = "request"
        self.over = False
        server.live += 1
        limit = float(server.opts.wait) if server.opts.wait else REQUEST_TIMEOUT
        self.timer: Optional[Timer] = self.hub.call_at(time.monotonic() + limit,
                                                      self._timed_out)
        if server.tls_context is not None:
            from .tls import begin_handshake
            self.tls = begin_handshake(sock, server.tls_context, server.opts, server_side=True)
            self.phase = "tls"
        self.hub.soon(self)  # the first read, in the loop (whose failed() answers for it)

    # -- the hub's calls --------------------------------------------------------
    def on_ready(self, fd: Optional[int], events: int) -> None:
        if self.over:
            return
        if self.phase == "tls":
            self._advance_tls()
        elif self.phase == "request":
            self._read_request()
        elif self.phase == "linger":
            self._drain()
        elif self.phase == "connect":
            self._client_waits()

    def failed(self, exc: BaseException) -> None:
        self._drop(str(exc))

    def _advance_tls(self) -> None:
        import ssl

        from ..relay.tls import TlsStream
        from .tls import finish_handshake, handshake_failed

        try:
            wait = self.tls.advance_handshake()
            if not wait:
                finish_handshake(self.tls, self.server.opts, self.server.report,
                                 server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self._drop(str(handshake_failed(self.tls, exc)))
            return
        except PyncError as err:
            self._drop(err.message)
            return
        if wait:
            self.hub.watch(self.sock.fileno(), wait, self)
            return
        self.stream = TlsStream(self.tls, self.where)
        self.phase = "request"
        self._read_request()

    def _read_request(self) -> None:
        buf = memoryview(bytearray(16 * 1024))
        try:
            while not self.request.done:
                try:
                    n = self.stream.read_into(buf)
                except (BlockingIOError, InterruptedError):
                    break
                if not n:
                    self.request.eof()
                self.out += self.request.feed(bytes(buf[:n]))
        except Refused as refusal:
            self._refuse(refusal)
            return
        except (OSError, PyncError) as exc:
            self._drop(f"request: {exc}")
            return
        if not self._send():
            return
        if not self.request.done:
            self.hub.watch(self.sock.fileno(), EVENT_READ, self)
            return
        # The request is whole: wait for the tunnel, and meanwhile only for
        # the client leaving (its name's lookup and connect are then dropped).
        self.hub.watch(self.sock.fileno(), EVENT_READ, self)
        self.phase = "connect"
        if self.timer is not None:
            self.timer.cancel()
        limit = float(self.server.opts.wait) if self.server.opts.wait else CONNECT_TIMEOUT
        self.timer = self.hub.call_at(time.monotonic() + limit, self._connect_timed_out)
        req = self.request
        who = f" as {req.user}" if req.user else ""
        if self.server.report.verbose:
            self.server.report.line(f"{self.where}: {KINDS[self.server.kind]} request for "
                                    f"{req.host} {req.port}{who}")
        addrs = numeric(req.host, req.port, self.server.opts.family)
        if addrs is not None:
            self._connect(addrs)
        elif self.server.opts.numeric:
            self._failed(f"{req.host}: no name lookups (-n)", NAME_NOT_FOUND)
        else:
            self.lookup = self.server.resolver.lookup(req.host, req.port,
                                                      self.server.opts.family, self._resolved)

    def _send(self) -> bool:
        """Send our answers so far (small: they fit the socket); False if the client left."""
        try:
            while self.out:
                del self.out[:self.stream.write(memoryview(self.out))]
        except (BlockingIOError, InterruptedError):
            return True  # what is left goes with the tunnel's first bytes
        except OSError as exc:
            self._drop(f"write failed: {exc.strerror or exc}")
            return False
        return True

    def _client_waits(self) -> None:
        """While the tunnel is made: has the client left (a reset)?  Bytes
        it sends early, and its end of stream (a half-close, as ``nc -N``
        sends after its request: it still wants the answer), stay where
        they are, for the tunnel."""
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop("left before its tunnel was open")
            return
        self.hub.watch(self.sock.fileno(), 0, self)

    def _connect_timed_out(self) -> None:
        self.timer = None
        if self.over:
            return
        if self.lookup is not None:
            self.lookup.cancel()
            self.lookup = None
        if self.connector is not None:
            self.connector.cancel()
            self.connector = None
        self._failed(f"{self.request.host} {self.request.port}: timed out", errno.ETIMEDOUT)

    # -- the destination --------------------------------------------------------
    def _resolved(self, answer: Union[list[AddrInfo], str]) -> None:
        self.lookup = None
        if isinstance(answer, str):
            self._failed(f"{self.request.host}: {answer}", NAME_NOT_FOUND)
            return
        self._connect(answer)

    def _connect(self, addrs: list[AddrInfo]) -> None:
        if self.over:
            return
        self.connector = Connector(self.hub, addrs, self.server.opts, self.server.report,
                                   self.request.host, self.request.port, self._joined,
                                   self._failed)

    def _joined(self, out: socket.socket, leftover: bytes) -> None:
        if self.over:
            out.close()
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        req = self.request
        reply = bytes(self.out) + req.connected(out.getsockname())
        self.out.clear()
        backend().unpaced(out)
        self.over = True  # the Pair carries on
        to_b, limit = req.first + req.leftover, None
        if req.first:  # a request passed on: its body, and nothing after it
            body = req.leftover[:req.body_length]
            to_b, limit = req.first + body, req.body_length - len(body)
        Pair(self.hub, self.stream, SocketStream(out, f"{req.host} port {req.port}"),
             idle=self.server.opts.wait or None, on_end=self._ended,
             to_b=to_b, to_a=reply, limit_to_b=limit)

    def _failed(self, reason: str, err: int) -> None:
        if self.over:
            return
        self.connector = None
        self.server.report.client_failed(self.where, reason)
        self.out += self.request.failed(err)
        self._linger()

    # -- ending -----------------------------------------------------------------
    def _refuse(self, refusal: Refused) -> None:
        self.server.report.client_failed(self.where, f"refused: {refusal}")
        self.out += refusal.reply
        self._linger()

    def _linger(self) -> None:
        """Send the answer, shut our side, and read out what the client still
        sends until it closes (bounded): closing with unread input would
        reset the connection and lose the answer."""
        self.phase = "linger"
        if not self._send():
            return
        try:
            self.stream.shutdown_write()
        except OSError:
            pass
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.hub.call_at(time.monotonic() + LINGER, self._close)
        self.hub.watch(self.sock.fileno(), EVENT_READ, self)
        self._drain()

    def _drain(self) -> None:
        buf = memoryview(bytearray(4096))
        try:
            while self.stream.read_into(buf):
                pass
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, PyncError):  # a reset, a TLS alert: over either way
            pass
        self._close()

    def _timed_out(self) -> None:
        self.timer = None
        if self.phase == "linger":
            self._close()
            return
        self._drop("timed out before its request was whole")

    def _drop(self, reason: str) -> None:
        self.server.report.client_failed(self.where, reason)
        self._close()

    def _close(self) -> None:
        if self.over:
            return
        self.over = True
        if self.timer is not None:
            self.timer.cancel()
        if self.lookup is not None:
            self.lookup.cancel()
        if self.connector is not None:
            self.connector.cancel()
        self.hub.forget(self.sock.fileno())
        self.stream.close()
        self.server.live -= 1

    def _ended(self, pair: Pair, why: str) -> None:
        self.server.live -= 1
        self.server.report.pair_ended(self.where, why, pair.ab.moved, pair.ba.moved,
                                      pair.seconds)

