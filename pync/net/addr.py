"""Hosts, ports and names: parsing ports and ranges, resolving, naming peers.

All of nc's rules about addresses live here: a port may be a number, a
service name (looked up even with -n) or a range ``lo-hi``; a name is shown
as ``host (ip)``; peers are reverse-resolved unless -n.
"""

from __future__ import annotations

import errno
import os
import socket

from ..base.numbers import strtonum
from ..base.report import PyncError, gai_strerror

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Union

PORT_MAX = 65535

AddrInfo = tuple[int, int, int, str, tuple]


def parse_port(text: str, proto: str = "tcp", low: int = 1) -> int:
    """One port: a service name or a number in [low, 65535].

    Errors use nc's words: ``port number invalid: abc``.
    """
    service = _service(text, proto)
    if service is not None:
        return service
    try:
        return strtonum(text, low, PORT_MAX)
    except ValueError as exc:
        raise PyncError(f"port number {exc}: {text}") from None


def _service(name: str, proto: str) -> Optional[int]:
    """The port of a service name (/etc/services), or None."""
    try:
        return socket.getservbyname(name, proto)
    except (OSError, ValueError):  # unknown, or not a valid C string
        return None


def parse_ports(args: list[str], proto: str = "tcp") -> list[int]:
    """Ports as nc's build_ports() takes them: names, numbers, ``lo-hi`` ranges.

    A reversed range is swapped; the order given is kept otherwise.
    """
    ports: list[int] = []
    for arg in args:
        service = _service(arg, proto)
        if service is not None:
            ports.append(service)
            continue
        if arg[:1].isdigit() and "-" in arg:
            lo_text, hi_text = arg.split("-", 1)
            hi = parse_port(hi_text, proto)
            lo = parse_port(lo_text, proto)
            if lo > hi:
                lo, hi = hi, lo
            ports.extend(range(lo, hi + 1))
        else:
            ports.append(parse_port(arg, proto))
    return ports


def resolve(host: Optional[str], port: int, family: int, socktype: int,
            numeric: bool) -> list[AddrInfo]:
    """getaddrinfo with nc's flags; raises PyncError with gai's words.

    The error names the host and port, as nc does for the destination:
    ``getaddrinfo for host "x" port 80: Name or service not known``.
    """
    flags = socket.AI_NUMERICSERV
    if numeric:
        flags |= socket.AI_NUMERICHOST
    try:
        return _getaddrinfo(host, port, family, socktype, flags)
    except (OSError, ValueError) as exc:
        raise PyncError(f'getaddrinfo for host "{host}" port {port}: '
                        f"{gai_strerror(exc)}") from None


def _getaddrinfo(host: Optional[str], port: Union[int, str, None], family: int,
                 socktype: int, flags: int) -> list[AddrInfo]:
    """socket.getaddrinfo; a name Python's IDNA codec refuses (``a..b``) goes
    to the C library as bytes, which answers in its own words, as for nc."""
    infos: Any
    try:
        infos = socket.getaddrinfo(host, port, family, socktype, 0, flags)
    except UnicodeError:
        assert host is not None
        raw = host.encode("utf-8", "surrogateescape")
        infos = socket.getaddrinfo(raw, port, family, socktype, 0, flags)
    return infos


def resolve_local(host: Optional[str], port: Optional[str], family: int,
                  socktype: int, numeric: bool) -> list[AddrInfo]:
    """The address for -s/-p (or a listen address): ``getaddrinfo: ...`` errors."""
    flags = socket.AI_PASSIVE
    if numeric:
        flags |= socket.AI_NUMERICHOST
    try:
        return _getaddrinfo(host, port, family, socktype, flags)
    except (OSError, ValueError) as exc:
        raise PyncError(f"getaddrinfo: {gai_strerror(exc)}") from None


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """-x ``host[:port]``, ``[v6addr]:port``, ``[v6addr]`` or a bare IPv6 address."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise PyncError(f"invalid proxy address: {text}")
        port_text = rest[1:] or None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None  # a name, IPv4, or an unbracketed IPv6 address
    if not host:
        raise PyncError(f"invalid proxy address: {text}")
    return host, parse_port(port_text) if port_text else default_port


def split_local(text: str, proto: str = "tcp") -> tuple[Optional[str], int]:
    """-L ``[addr:]port``: ``6000``, ``127.0.0.1:6000``, ``[::1]:6000``,
    ``localhost:http`` (port 0: the kernel picks one, shown under -v)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":") or not host:
            raise PyncError(f"invalid -L address: {text}")
        return host, parse_port(rest[1:], proto, low=0)
    host, sep, port_text = text.rpartition(":")
    if sep and (not host or ":" in host):
        raise PyncError(f"invalid -L address (an IPv6 address goes in brackets): {text}")
    return host or None, parse_port(port_text, proto, low=0)


def is_socket_path(text: str) -> bool:
    """A -L value naming a UNIX socket rather than [addr:]port."""
    return "/" in text or text.startswith("@")


def numeric_host(sockaddr: tuple) -> str:
    """The address part of an IPv4/IPv6 sockaddr, without scope noise."""
    return str(sockaddr[0])


def display_host(sockaddr: tuple, numeric: bool) -> str:
    """A peer or local address as nc prints it: its name, else the address."""
    ip = numeric_host(sockaddr)
    if numeric:
        return ip
    try:
        name, _ = socket.getnameinfo((ip, 0) if len(sockaddr) == 2 else
                                     (ip, 0, 0, sockaddr[3]),
                                     socket.NI_NAMEREQD)
        return name
    except (OSError, ValueError):
        return ip


def service_name(port: int, proto: str, numeric: bool) -> str:
    """The service of a port for ``[tcp/http]``; ``*`` when unknown or -n."""
    if numeric:
        return "*"
    try:
        return socket.getservbyport(port, proto)
    except (OSError, OverflowError):
        return "*"


SUN_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path) on Linux


def unix_address(path: str) -> str:
    """A UNIX socket path; ``@name`` means Linux's abstract namespace.

    A path too long for sockaddr_un is ENAMETOOLONG (nc's "File name too
    long"), not Python's own wording.
    """
    if path.startswith("@"):
        path = "\0" + path[1:]
    if len(os.fsencode(path)) >= SUN_PATH_MAX + (path[:1] == "\0"):
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    return path


def peer_ip(peer: object) -> str:
    """The address of an accepted or datagram peer; "" for a UNIX peer."""
    return str(peer[0]) if isinstance(peer, tuple) else ""


def describe_peer(peer: object, numeric: bool, unix_path: Optional[str]) -> str:
    """``host port`` as nc prints a peer; a UNIX peer shows its (or our) path."""
    if not isinstance(peer, tuple):
        return peer if isinstance(peer, str) and peer else unix_path or ""
    return f"{display_host(peer, numeric)} {peer[1]}"
