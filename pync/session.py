"""What connect and listen modes share: the relay settings and one session.

Both modes end up with a connected socket and pync's stdio; ``relay_session``
joins them with the settings the Options ask for.
"""

from __future__ import annotations

import socket
from typing import Callable, Optional

from .options import Options
from .relay import Relay, RelayConfig
from .report import Reporter
from .streams import DatagramStream, SocketStream, Stream


def relay_config(opts: Options) -> RelayConfig:
    """Translate Options into the relay's terms."""
    return RelayConfig(
        end_at_net_eof=opts.listen and not opts.udp,
        quit_from_stdin_eof=opts.listen or opts.udp,
        half_close=opts.half_close,
        quit_after=opts.quit_after_eof if opts.quits_after_eof else None,
        idle_timeout=float(opts.wait) if opts.wait else None,
        interval=float(opts.interval),
        crlf=opts.crlf,
        recv_limit=opts.recv_limit,
        no_stdin=opts.no_stdin or opts.recv_only,
        send_only=opts.send_only,
    )


def relay_session(sock: socket.socket, label: str, local: Stream,
                  opts: Options, report: Reporter, *, connected: bool = True,
                  first_data: bytes = b"",
                  accept_from: Optional[Callable[[str], bool]] = None) -> int:
    """Relay stdio over a socket until the session ends; close it.

    Datagram sockets (-u) relay message by message; ``connected=False`` is
    a -u -l -k socket that answers whoever sent last.
    """
    net: Stream
    if sock.type == socket.SOCK_DGRAM:
        net = DatagramStream(sock, label, connected=connected, accept_from=accept_from)
    else:
        net = SocketStream(sock, label)
    try:
        return Relay(local, net, relay_config(opts), report, first_data).run()
    finally:
        net.close()
