"""Server mode: bind, take one connection (or one after another with -k),
relay stdio over it.

``-l [addr] port`` or ``-l -s addr -p port``; port 0 lets the kernel choose
(shown under -v).  ``-U path`` listens on a UNIX-domain socket (``@name``:
Linux's abstract namespace).  SO_REUSEADDR is set so a restarted listener
can rebind at once; SO_REUSEPORT is not (nc sets it), so a port already in
use is an error instead of two listeners silently sharing it.

With -u there is no connection to accept: the first datagram's sender
becomes the peer (the socket connects to it), as in nc; with -k the socket
stays unconnected, hears every sender and answers the latest.
"""

from __future__ import annotations

import socket
import time

from ..base.options import IPPROTO_DCCP, Options
from ..base.report import PyncError, Reporter, strerror
from ..net import sockopts
from ..net.addr import describe_peer, display_host, peer_ip, resolve_local
from ..net.sockopts import new_socket
from ..net.unixsock import SocketFile, bind_unix
from ..platform import EVENT_READ, backend
from ..platform.base import AF_UNIX
from ..platform.signals import SignalsDeferred
from ..relay.buffers import DATAGRAM_MAX
from .accepting import Acceptor
from .access import AccessList
from .broker import Broker
from .session import SessionKit, relay_session

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

BACKLOG = 5
REAP_EVERY = 1.0  # seconds: how long ended -k -e workers may wait to be reaped
DEFAULT_WORKERS = 100  # -l -k -e: children at once without --max-conns (ncat's default)


def _backlog(opts: Options) -> int:
    """A short queue for one session at a time; a broker takes crowds at once."""
    return socket.SOMAXCONN if opts.brokering else BACKLOG


def run_listen(opts: Options, kit: SessionKit, report: Reporter) -> int:
    """Listen mode; returns the exit status of the last session."""
    access = AccessList(opts.allow, opts.deny)  # names resolved before binding
    cleanup: Optional[SocketFile] = None
    server: Optional[socket.socket] = None
    try:
        with SignalsDeferred():  # a signal now comes after cleanup is armed
            if opts.unix:
                assert opts.unix_path is not None
                server, cleanup = unix_listener(opts.unix_path, opts.udp, _backlog(opts))
            else:
                server = inet_listener(opts, report, opts.host, opts.ports[0], _backlog(opts))
        if opts.unix:
            # Said only once inside the try: a signal that follows the
            # message finds the socket file's cleanup armed.
            report.bound(opts.unix_path or "")
            if not opts.udp:
                report.listening(opts.unix_path or "")
        if opts.brokering:
            return Broker(server, opts, kit.stdio, report, access).run()
        if opts.udp:
            return _datagram_session(server, opts, kit, report, access)
        return _serve_streams(server, opts, kit, report, access)
    finally:
        with SignalsDeferred():  # a signal now cannot cut the clean-up short
            if server is not None:
                server.close()
            if cleanup is not None:
                cleanup.remove()


def _serve_streams(server: socket.socket, opts: Options, kit: SessionKit,
                   report: Reporter, access: AccessList) -> int:
    """Accept connections: one session, or (-k) one after another.

    With -k and -e/-c the sessions run at once, each in a worker of its own
    (modes/workers.py: forked, or spawned where there is no fork).
    Under -k a session that fails (a TLS handshake, say) is reported and the
    listener goes on.
    """
    workers = None
    if opts.keep_open and opts.exec_argv:
        from .workers import session_workers
        workers = session_workers(opts.max_conns or DEFAULT_WORKERS, kit.argv, kit.tls_pem)
    acceptor = Acceptor(server, report)
    try:
        while True:
            if workers is not None:
                workers.reap()
            acceptor.wait(REAP_EVERY if workers is not None else None)
            got = acceptor.accept()
            if got is None:
                if acceptor.starved:  # no descriptor even to refuse with: wait
                    time.sleep(0.1)  # for one to free up, without spinning
                continue
            conn, peer = got
            ip = peer_ip(peer)
            if not access.permits(ip):
                conn.close()
                report.denied(f"not allowed ({ip})")
                continue
            if workers is not None:
                workers.reap()  # some may have ended while we waited
            if workers is not None and workers.full:
                conn.close()
                report.denied(f"connection limit reached ({workers.limit})")
                continue
            where = describe_peer(peer, opts.numeric, opts.unix_path)
            report.received(where)

            def session(conn: socket.socket = conn, where: str = where) -> int:
                return serve_connection(conn, where, kit, opts, report)

            if workers is not None:
                def in_worker(session: Callable[[], int] = session) -> int:
                    server.close()  # the worker serves its one connection
                    return session()

                try:
                    workers.start(conn, where, in_worker)
                except OSError as exc:  # no process to spare: refuse, go on
                    report.denied(f"fork: {strerror(exc)}")
                conn.close()
                continue
            status = session()
            if not opts.keep_open:
                return status
    finally:
        acceptor.close()
        if workers is not None:
            workers.stop()


def serve_connection(conn: socket.socket, where: str, kit: SessionKit, opts: Options,
                     report: Reporter) -> int:
    """One accepted connection's session; a failure (a TLS handshake, say)
    is reported and is that session's status, not the listener's end."""
    try:
        return relay_session(conn, _label(where, opts), kit, opts, report)
    except PyncError as err:
        report.error(err)
        return 1


def _label(where: str, opts: Options) -> str:
    """How relay errors name the peer: ``127.0.0.1 port 9 (udp)``."""
    if opts.unix:
        return where
    host, port = where.rsplit(" ", 1)
    return f"{host} port {port} ({opts.proto_name})"


def _datagram_session(server: socket.socket, opts: Options, kit: SessionKit,
                      report: Reporter, access: AccessList) -> int:
    """-u -l: the first sender becomes the peer; with -k, every sender is heard.

    Datagrams from senders the access lists refuse are dropped.
    """
    if opts.keep_open:
        where = opts.unix_path or "" if opts.unix else "any sender"
        return relay_session(server, where, kit, opts, report, connected=False,
                             accept_from=(lambda peer: access.permits(peer_ip(peer)))
                             if access.active else None)
    plat = backend()
    while True:
        plat.wait_fd(server.fileno(), EVENT_READ, None)  # ^C ends this wait everywhere
        try:
            data, peer = server.recvfrom(DATAGRAM_MAX)
        except (BlockingIOError, InterruptedError, ConnectionResetError):
            continue  # (Windows: an ICMP refusal of an earlier datagram)
        ip = peer_ip(peer)
        if access.permits(ip):
            break
        report.denied(f"not allowed ({ip})")
    where = describe_peer(peer, opts.numeric, opts.unix_path)
    report.received(where)
    connected = bool(peer)  # an unbound UNIX sender has no address to answer
    if connected:
        server.connect(peer)
    return relay_session(server, _label(where, opts), kit, opts, report,
                         connected=connected, first_data=data)


def inet_listener(opts: Options, report: Reporter, host: Optional[str], port: int,
                  backlog: int) -> socket.socket:
    """Bind the first address that works for [host] port (and listen, for
    TCP), with the socket options asked for; say where under -v."""
    md5_key = sockopts.read_md5_password() if opts.md5sig else None
    last_error: Optional[OSError] = None
    for family, socktype, proto, _, sockaddr in resolve_local(
            host, str(port), opts.family, opts.socktype, opts.numeric):
        sock = new_socket(family, socktype, IPPROTO_DCCP if opts.dccp else proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sockopts.apply(sock, family, opts, md5_key)
            sock.bind(sockaddr)
            if not opts.udp:
                sock.listen(backlog)
        except PyncError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        local = sock.getsockname()
        where = f"{display_host(local, opts.numeric)} {local[1]}"
        if opts.udp:
            report.bound(where)
        else:
            report.listening(where)
        return sock
    raise PyncError(strerror(last_error) if last_error else "no address to listen on")


def unix_listener(path: str, udp: bool, backlog: int
                  ) -> tuple[socket.socket, Optional[SocketFile]]:
    """-lU path: bind a UNIX socket (stream, or datagram with -u)."""
    assert AF_UNIX is not None  # -U was refused where there is none
    sock = socket.socket(AF_UNIX, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        created = bind_unix(sock, path)
    except PyncError:
        sock.close()
        raise
    try:
        if not udp:
            sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if created:
            created.remove()
        raise PyncError(strerror(exc)) from None
    return sock, created
