"""What connect and listen modes share: the relay settings and one session.

Every mode ends up with a connected socket.  ``relay_session`` makes the
two ends out of it — the network end (plain, datagram or TLS) and the local
end (pync's stdio, or an -e/-c child) — with the byte work the options ask
for (-t, -o, --hex-dump) and relays them.  ``SessionKit`` holds what all
sessions of one run share: stdio, the dump files, the TLS context.
"""

from __future__ import annotations

import socket

from ..base.options import Options
from ..base.report import Reporter
from ..platform import backend
from ..relay.dump import SessionDump
from ..relay.loop import ByteWork, Relay, RelayConfig
from ..relay.streams import DatagramStream, SocketStream, StdioStream, Stream

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Callable, Optional

    from ..relay.progress import Meter


class SessionKit:
    """What every session of one pync run shares."""

    def __init__(self, stdio: StdioStream, opts: Options, report: Reporter,
                 argv: Sequence[str] = (), tls_pem: Optional[bytes] = None) -> None:
        self.stdio = stdio
        self.opts = opts
        self.report = report
        self.argv = list(argv)  # the command line, for spawned -l -k -e workers
        self.dump = (SessionDump(opts.output, opts.hex_dump, opts.append_output)
                     if opts.output or opts.hex_dump else None)
        if opts.exec_argv:
            from .exec import check_program
            check_program(opts.exec_argv)
        # Built before listening or connecting (and before -k -e forks), so a
        # bad certificate fails at once and a listener's temporary
        # certificate is one for all sessions, its fingerprint shown first.
        self.tls_context: Any = None
        self.tls_pem = tls_pem  # a temporary server certificate, for workers
        if opts.ssl:
            from . import tls
            if opts.listen:
                self.tls_context, self.tls_pem = tls.server_context(opts, report, tls_pem)
            else:
                self.tls_context = tls.client_context(opts, report)

    def close(self, interrupted: bool = False) -> None:
        """The run is over: stdout written out, dump files closed."""
        self.stdio.finish(flush=not interrupted)
        if self.dump is not None:
            self.dump.close()


def relay_config(opts: Options) -> RelayConfig:
    """Translate Options into the relay's terms."""
    child = opts.exec_argv is not None
    return RelayConfig(
        # nc: a listener ends when the network input ends; for UDP that is
        # when stdout is gone (or -W, or an ICMP error), never an EOF.
        end_at_net_eof=opts.listen and not child,
        quit_from_stdin_eof=opts.listen or opts.udp,
        half_close=opts.half_close or child,
        quit_after=opts.quit_after_eof if opts.quits_after_eof else None,
        idle_timeout=float(opts.wait) if opts.wait else None,
        interval=float(opts.interval),
        crlf=opts.crlf,
        recv_limit=opts.recv_limit,
        no_stdin=opts.no_stdin or opts.recv_only,
        send_only=opts.send_only,
        end_at_local_eof=child,
    )


def relay_session(sock: socket.socket, label: str, kit: SessionKit,
                  opts: Options, report: Reporter, *, connected: bool = True,
                  first_data: bytes = b"", server_name: Optional[str] = None,
                  accept_from: Optional[Callable[[object], bool]] = None) -> int:
    """Relay the local end over a socket until the session ends; close both.

    Datagram sockets (-u) relay message by message; ``connected=False`` is
    a -u -l -k socket that answers whoever sent last.  With --ssl the
    handshake happens here (``server_name``: the name a client verifies).
    """
    try:
        net = _network_end(sock, label, kit, opts, report, connected,
                           server_name, accept_from, first_data)
    except BaseException:
        sock.close()
        raise
    try:
        local = _local_end(sock, kit, opts)
    except BaseException:
        net.close()
        raise
    work = ByteWork(record=kit.dump.record if kit.dump else None)
    if opts.telnet:
        from ..protocols.telnet import TelnetFilter
        work.telnet = TelnetFilter()
    try:
        return Relay(local, net, relay_config(opts), report,
                     b"" if opts.ssl else first_data, work,
                     _meter(opts, report, local)).run()
    except BaseException:
        local.interrupt()
        raise
    finally:
        net.close()
        if local is not kit.stdio:
            local.close()


def _meter(opts: Options, report: Reporter, local: Stream) -> Optional[Meter]:
    """--progress: a meter when stderr is a terminal (or --progress=force)."""
    if opts.progress is None:
        return None
    if opts.progress != "force":
        try:
            if not report.stream.isatty():
                return None
        except (AttributeError, ValueError):
            return None
    from ..relay.progress import Meter, input_size
    return Meter(report.stream, input_size(getattr(local, "source_fd", local.read_fd)))


def _network_end(sock: socket.socket, label: str, kit: SessionKit, opts: Options,
                 report: Reporter, connected: bool, server_name: Optional[str],
                 accept_from: Optional[Callable[[object], bool]],
                 first_data: bytes) -> Stream:
    if sock.type == socket.SOCK_DGRAM:
        return DatagramStream(sock, label, connected=connected, accept_from=accept_from)
    backend().unpaced(sock)
    if opts.ssl:
        # Bytes already read (after a proxy's reply) are the first ciphertext.
        from .tls import TlsStream, handshake
        tls = handshake(sock, kit.tls_context, opts, report, server_side=opts.listen,
                        server_name=server_name, received=first_data)
        return TlsStream(tls, label)
    return SocketStream(sock, label)


def _local_end(sock: socket.socket, kit: SessionKit, opts: Options) -> Stream:
    """pync's stdio, or a new -e/-c child for this connection."""
    if opts.exec_argv is None:
        return kit.stdio
    from .exec import ProcessStream, child_environment
    return ProcessStream(opts.exec_argv, child_environment(sock, opts.proto_name))
