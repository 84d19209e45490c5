"""What connect and listen modes share: the relay settings and one session.

Both modes end up with a connected socket and pync's stdio; ``relay_session``
joins them with the settings the Options ask for.
"""

from __future__ import annotations

import socket

from .options import Options
from .relay import Relay, RelayConfig
from .report import Reporter
from .streams import SocketStream, Stream


def relay_config(opts: Options) -> RelayConfig:
    """Translate Options into the relay's terms."""
    return RelayConfig(
        listen_mode=opts.listen,
        half_close=opts.half_close,
        quit_after=opts.quit_after_eof if opts.quits_after_eof else None,
        idle_timeout=float(opts.wait) if opts.wait else None,
        interval=float(opts.interval),
        crlf=opts.crlf,
        recv_limit=opts.recv_limit,
        no_stdin=opts.no_stdin,
    )


def relay_session(sock: socket.socket, label: str, local: Stream,
                  opts: Options, report: Reporter) -> int:
    """Relay stdio over a connected socket until the session ends; close it."""
    net = SocketStream(sock, label)
    try:
        return Relay(local, net, relay_config(opts), report).run()
    finally:
        net.close()
