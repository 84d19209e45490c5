"""Client mode: connect to each port given, and relay stdio over it.

As nc: every address getaddrinfo returns is tried in order until one
connects (failures are reported under -v), ``-s``/``-p`` bind the local end,
``-w`` bounds each connect, and with several ports each is connected and
relayed in turn.  Exit 0 if any connection succeeded.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
from typing import Optional

from . import sockopts
from .addr import numeric_host, resolve, service_name, unix_address
from .options import IPPROTO_DCCP, Options
from .report import PyncError, Reporter, strerror
from .session import relay_session
from .sockopts import new_socket
from .streams import Stream
from .unixsock import SocketFile, bind_unix


def run_connect(opts: Options, local: Stream, report: Reporter) -> int:
    """Connect mode; returns the exit status."""
    if opts.unix:
        return _connect_unix(opts, local, report)
    md5_key = sockopts.read_md5_password() if opts.md5sig else None
    ports = list(opts.ports)
    if opts.randomize:
        random.shuffle(ports)
    status = 1
    failed = False
    assert opts.host is not None
    for port in ports:
        opened = open_connection(opts, opts.host, port, report, md5_key)
        if opened is None:
            continue
        sock, ip = opened
        status = 0
        report.connect_succeeded(opts.host, ip, port, opts.proto_name,
                                 service_name(port, opts.proto_name, opts.numeric))
        label = f"{ip} port {port} ({opts.proto_name})"
        if relay_session(sock, label, local, opts, report):
            failed = True
    return 1 if failed else status


def open_connection(opts: Options, host: str, port: int, report: Reporter,
                    md5_key: Optional[bytes] = None
                    ) -> Optional[tuple[socket.socket, str]]:
    """Try each address of host:port; the connected socket and its address.

    None when every address failed (each failure reported under -v).
    """
    for family, socktype, proto, _, sockaddr in resolve(
            host, port, opts.family, opts.socktype, opts.numeric):
        ip = numeric_host(sockaddr)
        sock = new_socket(family, socktype, IPPROTO_DCCP if opts.dccp else proto)
        try:
            sockopts.bind_source(sock, opts, family)
            sockopts.apply(sock, family, opts, md5_key)
            sock.settimeout(opts.wait if opts.wait else None)
            sock.connect(sockaddr)
        except PyncError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            report.connect_failed(host, ip, port, opts.proto_name, exc)
            continue
        return sock, ip
    return None



def _connect_unix(opts: Options, local: Stream, report: Reporter) -> int:
    """-U path: connect to a UNIX-domain socket (``@name``: abstract).

    With -u the socket is a datagram one, and it needs an address of its own
    for replies: -s path, or a fresh socket in a private temp directory.
    """
    assert opts.unix_path is not None
    socktype = socket.SOCK_DGRAM if opts.udp else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_UNIX, socktype)
    own: Optional[SocketFile] = None
    try:
        if opts.udp:
            if opts.source_addr:
                own = bind_unix(sock, opts.source_addr)
            else:
                tmp = tempfile.mkdtemp(prefix="pync-")
                try:
                    own = bind_unix(sock, os.path.join(tmp, "recv.sock"))
                except PyncError:
                    os.rmdir(tmp)
                    raise
                if own:
                    own.remove_dir = True
        sock.settimeout(opts.wait if opts.wait else None)
        sock.connect(unix_address(opts.unix_path))
    except (OSError, ValueError) as exc:
        sock.close()
        if own:
            own.remove()
        raise PyncError(f"{opts.unix_path}: {strerror(exc)}") from None
    except PyncError:
        sock.close()
        raise
    try:
        return relay_session(sock, opts.unix_path, local, opts, report)
    finally:
        if own:
            own.remove()
