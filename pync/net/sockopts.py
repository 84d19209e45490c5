"""Socket options from the command line: -b -D -I -O -T -M -m -S.

Applied to every socket pync opens, connecting or listening, as nc's
set_common_sockopts() does; a failure is fatal with nc's words
(``pync: set IP ToS: Permission denied``).
"""

from __future__ import annotations

import socket

from ..base.options import Options
from ..base.report import PyncError, strerror
from ..platform import backend
from .addr import resolve_local

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

def new_socket(family: int, socktype: int, proto: int = 0) -> socket.socket:
    """socket(), with a failure (no DCCP here, out of descriptors) as a PyncError."""
    try:
        return socket.socket(family, socktype, proto)
    except OSError as exc:
        raise PyncError(strerror(exc)) from None


def bind_source(sock: socket.socket, opts: Options, family: int) -> None:
    """-s address and -p port for the local end of an outgoing connection."""
    if opts.source_addr is None and opts.source_port is None:
        return
    info = resolve_local(opts.source_addr, opts.source_port, family,
                         sock.type, opts.numeric)
    if opts.source_port is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(info[0][4])
    except OSError as exc:
        raise PyncError(f"bind failed: {strerror(exc)}") from None


def _set(sock: socket.socket, level: int, name: int, value: int,
         what: Optional[str]) -> None:
    try:
        sock.setsockopt(level, name, value)
    except OSError as exc:
        raise PyncError(f"{what}: {strerror(exc)}" if what else strerror(exc)) from None


def apply(sock: socket.socket, family: int, opts: Options,
          md5_key: Optional[bytes] = None) -> None:
    """Set every option the user asked for on a fresh socket."""
    inet4 = family == socket.AF_INET
    inet6 = family == socket.AF_INET6
    if opts.broadcast:
        _set(sock, socket.SOL_SOCKET, socket.SO_BROADCAST, 1, None)
    if md5_key is not None and (inet4 or inet6):
        try:
            backend().set_md5sig(sock, family, md5_key)
        except OSError as exc:
            raise PyncError(strerror(exc)) from None
    if opts.sock_debug:
        _set(sock, socket.SOL_SOCKET, socket.SO_DEBUG, 1, None)
    if opts.tos is not None:
        if inet4:
            _set(sock, socket.IPPROTO_IP, socket.IP_TOS, opts.tos, "set IP ToS")
        elif inet6:
            _set(sock, socket.IPPROTO_IPV6, socket.IPV6_TCLASS, opts.tos,
                 "set IPv6 traffic class")
    if opts.recv_buf is not None:
        _set(sock, socket.SOL_SOCKET, socket.SO_RCVBUF, opts.recv_buf,
             "set TCP receive buffer size")
    if opts.send_buf is not None:
        _set(sock, socket.SOL_SOCKET, socket.SO_SNDBUF, opts.send_buf,
             "set TCP send buffer size")
    if opts.ttl is not None:
        if inet4:
            _set(sock, socket.IPPROTO_IP, socket.IP_TTL, opts.ttl, "set IP TTL")
        elif inet6:
            _set(sock, socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, opts.ttl,
                 "set IPv6 unicast hops")
    if opts.min_ttl is not None and (inet4 or inet6):
        try:
            backend().set_min_ttl(sock, family, opts.min_ttl)
        except OSError as exc:
            what = "set IP min TTL" if inet4 else "set IPv6 min hop count"
            raise PyncError(f"{what}: {strerror(exc)}") from None


def read_md5_password() -> bytes:
    """-S: the TCP MD5 signature key, read from the terminal as nc does."""
    return backend().ask_secret("TCP MD5SIG password: ",
                                "Unable to read TCP MD5SIG password").encode()
