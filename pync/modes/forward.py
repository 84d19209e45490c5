"""-L [addr:]port host port: a port forwarder, every client at once, one loop.

``pync -L 6000 127.0.0.1 5000`` listens on port 6000 and joins each client
to a new connection to 127.0.0.1:5000 (pwncat's local forward, which nc
users build from a FIFO and ncat from ``--sh-exec``).  All clients share
one event loop (relay/hub.py): no process or thread per connection.  Each
client is a ForwardedClient: with --ssl, the TLS handshake (pync terminates
TLS: the destination sees plaintext); then the outbound connection
(modes/outbound.py, through -x's proxy if given); then a Pair
(relay/pair.py) that moves the bytes both ways, by splice() on Linux, with
half-close carried through and a reset passed on.

The listening side takes --allow/--deny/--max-conns (ncat's default of 100
clients at once), -4/-6, a UNIX socket (a -L value with a ``/``, or
``@name``); the outbound side -s/-p, -x/-X, -U (the destination is a
socket path), -w (each connect, and a pair idle that long ends).

-u forwards datagrams: one outbound socket per client address, forgotten
after -w (else IDLE_UDP) seconds of silence, as socat's UDP-LISTEN,fork.
"""

from __future__ import annotations

import socket
import time

from ..base.report import PyncError, Reporter, strerror
from ..net import sockopts
from ..net.addr import (
    describe_peer,
    is_socket_path,
    numeric_host,
    peer_ip,
    resolve,
    service_name,
    split_local,
    unix_address,
)
from ..platform import EVENT_READ, backend
from ..platform.base import AF_UNIX
from ..platform.signals import SignalsDeferred
from ..relay.hub import Hub
from ..relay.pair import Pair
from ..relay.streams import SocketStream
from .accepting import HubListener
from .access import AccessList
from .listen import inet_listener, unix_listener
from .outbound import Connector

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional

    from ..base.options import Options
    from ..net.addr import AddrInfo
    from ..net.unixsock import SocketFile
    from ..protocols.proxy import Handshake
    from ..relay.hub import Timer
    from ..relay.tls import TlsSession

DEFAULT_MAX_CONNS = 100   # clients at once without --max-conns (ncat's default)
FD_WANTED = 65536         # descriptors the forwarder asks for (sockets and pipes)
IDLE_UDP = 60.0           # seconds before a silent UDP client is forgotten, without -w
DATAGRAM_MAX = 65536


def run_forward(opts: Options, report: Reporter) -> int:
    """-L mode: serve until interrupted (^C: 130, SIGTERM: 143)."""
    plat = backend()
    plat.raise_fd_limit(FD_WANTED)
    access = AccessList(opts.allow, opts.deny)  # names resolved before binding
    target = Target(opts)
    if opts.udp:
        return _run_datagrams(opts, report, access, target)
    tls_context = None
    if opts.ssl:
        from . import tls
        tls_context = tls.server_context(opts, report)[0]
    hub = Hub()
    server, cleanup = _listen(opts, report, socket.SOCK_STREAM)
    listener: Optional[HubListener] = None
    try:
        forwarder = Forwarder(hub, opts, report, target, tls_context)
        assert opts.forward is not None
        listener = HubListener(hub, server, report, access, opts.max_conns or DEFAULT_MAX_CONNS,
                               lambda: forwarder.live, forwarder.serve, opts.numeric,
                               opts.forward if is_socket_path(opts.forward) else None)
        hub.run()
    finally:
        with SignalsDeferred():
            if listener is not None:
                listener.close()
            server.close()
            if cleanup is not None:
                cleanup.remove()
    return 0


def _listen(opts: Options, report: Reporter, socktype: int
            ) -> tuple[socket.socket, Optional[SocketFile]]:
    """The listening (or, -u, bound) socket that -L names."""
    assert opts.forward is not None
    with SignalsDeferred():  # a signal now comes after the socket file's cleanup is armed
        if is_socket_path(opts.forward):
            server, cleanup = unix_listener(opts.forward, socktype == socket.SOCK_DGRAM,
                                            socket.SOMAXCONN)
            report.listening(opts.forward)
            return server, cleanup
        host, port = split_local(opts.forward, opts.proto_name)
        return inet_listener(opts, report, host, port, socket.SOMAXCONN), None


class Target:
    """Where clients are forwarded: the destination's addresses (resolved
    once, at start), or -x's proxy and the handshake that reaches it."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.proxy: Any = None
        if opts.unix:
            assert opts.unix_path is not None and AF_UNIX is not None
            self.name, self.port = opts.unix_path, 0
            self.addrs: list[AddrInfo] = [(AF_UNIX, socket.SOCK_STREAM, 0, "",
                                           unix_address(opts.unix_path))]  # type: ignore[list-item]
            return
        assert opts.host is not None
        self.name, self.port = opts.host, opts.ports[0]
        socktype = socket.SOCK_DGRAM if opts.udp else socket.SOCK_STREAM
        if opts.proxy:
            from .connect import Proxy

            self.proxy = Proxy(opts)  # asks a SOCKS5 password now, once
            self.addrs = resolve(self.proxy.host, self.proxy.port, opts.family,
                                 socket.SOCK_STREAM, opts.numeric)
            self.destination = self.proxy._destination(self.name, self.port)
        else:
            self.addrs = resolve(self.name, self.port, opts.family, socktype, opts.numeric)

    def handshake(self) -> Handshake:
        """A new proxy handshake (with -x) for one connection."""
        from ..protocols.proxy import new_handshake

        return new_handshake(self.proxy.kind, self.destination, self.port,
                             self.opts.proxy_user, self.proxy.password)


class Forwarder:
    """What every forwarded client shares: the hub, the destination, TLS."""

    def __init__(self, hub: Hub, opts: Options, report: Reporter, target: Target,
                 tls_context: Any) -> None:
        self.hub = hub
        self.opts = opts
        self.report = report
        self.target = target
        self.tls_context = tls_context
        self.live = 0  # clients being served

    def serve(self, sock: socket.socket, where: str) -> None:
        ForwardedClient(self, sock, where)


class ForwardedClient:
    """One client: (TLS,) the outbound connection, then the Pair."""

    def __init__(self, fwd: Forwarder, sock: socket.socket, where: str) -> None:
        self.fwd = fwd
        self.sock = sock
        self.where = where
        self.tls: Optional[TlsSession] = None
        self.timer: Optional[Timer] = None
        self.connector: Optional[Connector] = None
        fwd.live += 1
        if fwd.tls_context is not None:
            self._begin_tls()
        else:
            self._connect()

    # -- TLS (the listening side) ---------------------------------------------
    def _begin_tls(self) -> None:
        from ..relay.tls import HANDSHAKE_TIMEOUT
        from .tls import begin_handshake

        opts = self.fwd.opts
        self.tls = begin_handshake(self.sock, self.fwd.tls_context, opts, server_side=True)
        limit = float(opts.wait) if opts.wait else HANDSHAKE_TIMEOUT
        self.timer = self.fwd.hub.call_at(time.monotonic() + limit, self._tls_timed_out)
        self.fwd.hub.soon(self)  # the handshake's first step, in the loop

    def on_ready(self, fd: Optional[int], events: int) -> None:
        """The TLS handshake moves on (the only phase that waits on the client)."""
        import ssl

        from .tls import finish_handshake, handshake_failed

        assert self.tls is not None
        try:
            wait = self.tls.advance_handshake()
            if not wait:
                finish_handshake(self.tls, self.fwd.opts, self.fwd.report, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self._fail_tls(str(handshake_failed(self.tls, exc)))
            return
        except PyncError as err:
            self._fail_tls(err.message)
            return
        if wait:
            self.fwd.hub.watch(self.sock.fileno(), wait, self)
            return
        if self.timer is not None:
            self.timer.cancel()
        self.fwd.hub.watch(self.sock.fileno(), 0, self)
        self._connect()

    def _tls_timed_out(self) -> None:
        self._fail_tls("TLS: handshake timed out")

    def failed(self, exc: BaseException) -> None:
        self._fail_tls(str(exc))

    def _fail_tls(self, reason: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.fwd.report.client_failed(self.where, reason)
        self.fwd.hub.forget(self.sock.fileno())
        self.sock.close()
        self.fwd.live -= 1

    # -- the outbound side ----------------------------------------------------
    def _connect(self) -> None:
        fwd = self.fwd
        self.connector = Connector(fwd.hub, fwd.target.addrs, fwd.opts, fwd.report,
                                   fwd.target.name, fwd.target.port, self._joined,
                                   self._refused,
                                   handshake=fwd.target.handshake if fwd.target.proxy else None)

    def _joined(self, out: socket.socket, leftover: bytes) -> None:
        fwd = self.fwd
        opts = fwd.opts
        if not opts.unix and fwd.target.proxy is None and fwd.report.verbose:
            try:
                ip = numeric_host(out.getpeername())
            except OSError:
                ip = fwd.target.name
            fwd.report.connect_succeeded(fwd.target.name, ip, fwd.target.port, "tcp",
                                         service_name(fwd.target.port, "tcp", opts.numeric))
        if fwd.target.proxy is None:
            backend().unpaced(out)
        backend().unpaced(self.sock)
        if self.tls is not None:
            from ..relay.tls import TlsStream
            client: SocketStream = TlsStream(self.tls, self.where)
        else:
            client = SocketStream(self.sock, self.where)
        Pair(fwd.hub, client, SocketStream(out, fwd.target.name), idle=opts.wait or None,
             on_end=self._ended, to_a=leftover)

    def _refused(self, reason: str, err: int) -> None:
        """The destination could not be reached: the client is closed."""
        if self.fwd.target.proxy is not None:  # (a direct connect said why already)
            self.fwd.report.client_failed(self.where, reason)
        self.fwd.hub.forget(self.sock.fileno())
        self.sock.close()
        self.fwd.live -= 1

    def _ended(self, pair: Pair, why: str) -> None:
        self.fwd.live -= 1
        self.fwd.report.pair_ended(self.where, why, pair.ab.moved, pair.ba.moved,
                                   pair.seconds)


# -- UDP -------------------------------------------------------------------------

def _run_datagrams(opts: Options, report: Reporter, access: AccessList,
                   target: Target) -> int:
    hub = Hub()
    server, cleanup = _listen(opts, report, socket.SOCK_DGRAM)
    forwarder = None
    try:
        forwarder = DatagramForwarder(hub, server, opts, report, access, target)
        hub.run()
    finally:
        with SignalsDeferred():
            if forwarder is not None:
                forwarder.close()
            server.close()
            if cleanup is not None:
                cleanup.remove()
    return 0


class DatagramClient:
    """One client address and the socket that speaks for it to the destination."""

    __slots__ = ("addr", "back", "forth", "last", "sock", "started", "timer", "where")

    def __init__(self, addr: Any, sock: socket.socket, where: str) -> None:
        self.addr = addr
        self.sock = sock
        self.where = where
        self.started = self.last = time.monotonic()
        self.forth = self.back = 0  # bytes to the destination, and back
        self.timer: Optional[Timer] = None


class DatagramForwarder:
    """-L -u: datagrams from each client address go out through a socket of
    its own (so the destination's answers find their way back)."""

    def __init__(self, hub: Hub, server: socket.socket, opts: Options, report: Reporter,
                 access: AccessList, target: Target) -> None:
        self.hub = hub
        self.server = server
        self.opts = opts
        self.report = report
        self.access = access
        self.target = target
        self.idle = float(opts.wait) if opts.wait else IDLE_UDP
        self.limit = opts.max_conns or DEFAULT_MAX_CONNS
        self.clients: dict[Any, DatagramClient] = {}
        self.by_fd: dict[int, DatagramClient] = {}
        self.buf = bytearray(DATAGRAM_MAX)
        server.setblocking(False)
        hub.watch(server.fileno(), EVENT_READ, self)

    def on_ready(self, fd: Optional[int], events: int) -> None:
        if fd == self.server.fileno():
            self._from_clients()
        elif fd is not None and fd in self.by_fd:
            self._from_destination(self.by_fd[fd])

    def _from_clients(self) -> None:
        view = memoryview(self.buf)
        for _ in range(64):  # a burst, then the others get a turn
            try:
                n, addr = self.server.recvfrom_into(view)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # (Windows: an earlier datagram's ICMP refusal)
            client = self.clients.get(addr) or self._new_client(addr)
            if client is None:
                continue
            client.last = time.monotonic()
            client.forth += n
            try:
                client.sock.send(view[:n])
            except OSError:
                pass  # the destination refused an earlier one (ICMP): datagrams go on

    def _new_client(self, addr: Any) -> Optional[DatagramClient]:
        ip = peer_ip(addr)
        if not self.access.permits(ip):
            self.report.denied(f"not allowed ({ip})")
            return None
        if len(self.clients) >= self.limit:
            self.report.denied(f"connection limit reached ({self.limit})")
            return None
        family, socktype, proto, _, sockaddr = self.target.addrs[0]
        try:
            sock = socket.socket(family, socktype, proto)
        except OSError as exc:
            self.report.client_failed(describe_peer(addr, self.opts.numeric, None),
                                      f"socket: {strerror(exc)}")
            return None
        try:
            sock.setblocking(False)
            sockopts.bind_source(sock, self.opts, family)
            sockopts.apply(sock, family, self.opts)
            sock.connect(sockaddr)
        except (OSError, PyncError) as exc:
            sock.close()
            why = exc.message if isinstance(exc, PyncError) else strerror(exc)
            self.report.client_failed(describe_peer(addr, self.opts.numeric, None),
                                      f"connect to {self.target.name} port {self.target.port} "
                                      f"(udp) failed: {why}")
            return None
        where = describe_peer(addr, self.opts.numeric, None)
        self.report.received(where)
        client = DatagramClient(addr, sock, where)
        self.clients[addr] = client
        self.by_fd[sock.fileno()] = client
        self.hub.watch(sock.fileno(), EVENT_READ, self)
        self._arm(client)
        return client

    def _from_destination(self, client: DatagramClient) -> None:
        view = memoryview(self.buf)
        for _ in range(64):
            try:
                n = client.sock.recv_into(view)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP port unreachable: nobody there yet
                self.report.net_error(f"read from {self.target.name} port {self.target.port}"
                                      " (udp) failed", exc, level=2)
                return
            client.last = time.monotonic()
            client.back += n
            try:
                self.server.sendto(view[:n], client.addr)
            except OSError:
                pass

    def _arm(self, client: DatagramClient) -> None:
        client.timer = self.hub.call_at(client.last + self.idle, lambda: self._expire(client))

    def _expire(self, client: DatagramClient) -> None:
        if self.clients.get(client.addr) is not client:
            return
        if time.monotonic() - client.last < self.idle:
            self._arm(client)
            return
        self._forget(client)
        self.report.pair_ended(client.where, "timed out", client.forth, client.back,
                               client.last - client.started)

    def _forget(self, client: DatagramClient) -> None:
        self.clients.pop(client.addr, None)
        self.by_fd.pop(client.sock.fileno(), None)
        self.hub.forget(client.sock.fileno())
        if client.timer is not None:
            client.timer.cancel()
        client.sock.close()

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._forget(client)
        self.hub.forget(self.server.fileno())

