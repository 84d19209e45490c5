"""--allow/--deny (and their files): which peers a listener accepts.

Entries are addresses, CIDR blocks or host names (resolved once, at start).
A peer is refused if an allow list exists and it is not on it, or if it is
on the deny list.  IPv4-mapped IPv6 peers (::ffff:127.0.0.2) count as their
IPv4 address.
"""

from __future__ import annotations

import ipaddress
import socket

from ..base.report import PyncError, gai_strerror, strerror

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Optional, Union

    Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def read_entries(values: Iterable[str], files: Iterable[str]) -> list[str]:
    """Entries from option values (comma-separated) and files (one a line, # comments)."""
    entries: list[str] = []
    for value in values:
        entries.extend(v.strip() for v in value.split(",") if v.strip())
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    line = line.split("#", 1)[0].strip()
                    entries.extend(v.strip() for v in line.split(",") if v.strip())
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
            raise PyncError(f"{path}: {strerror(exc)}") from None
    return entries


def _networks(entry: str) -> list[Network]:
    try:
        return [ipaddress.ip_network(entry, strict=False)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(entry, None, 0, socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise PyncError(f"cannot resolve access list entry {entry!r}: "
                        f"{gai_strerror(exc)}") from None
    return [ipaddress.ip_network(str(info[4][0]).split("%")[0]) for info in infos]


class AccessList:
    """The allow and deny lists of a listener."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        allow = list(allow)
        self.allow: Optional[list[Network]] = (
            [n for e in allow for n in _networks(e)] if allow else None)
        self.deny: list[Network] = [n for e in deny for n in _networks(e)]

    @property
    def active(self) -> bool:
        return self.allow is not None or bool(self.deny)

    def permits(self, address: str) -> bool:
        """Whether a peer at this address may connect."""
        if not self.active:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return self.allow is None  # a UNIX peer: only an allow list shuts it out
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if self.allow is not None and not any(ip in n for n in self.allow):
            return False
        return not any(ip in n for n in self.deny)
