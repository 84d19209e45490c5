"""Proxy handshakes: SOCKS4, SOCKS4a, SOCKS5 and HTTP CONNECT, without I/O.

Each handshake is a small state machine.  The caller sends ``start()``,
then hands every chunk received from the proxy to ``feed()`` and sends
what it returns, until ``done`` is true; ``leftover`` then holds the bytes
that came after the proxy's reply: they are the tunnel's first bytes.  If
the proxy closes first, ``eof()`` raises.  Any failure is a `ProxyError`
whose text is one line, without the ``pync:`` prefix.

Messages taken word for word from OpenBSD nc (Debian 1.219, socks.c),
each measured against the real ``nc``:

- ``connection failed, SOCKSv4 error: Request rejected or failed`` (and
  the other SOCKSv4 codes, `SOCKS4_ERRORS`; ``Unknown error`` otherwise)
- ``connection failed, SOCKSv5 error: Connection refused`` (and the other
  RFC 1928 codes, `SOCKS5_ERRORS`; ``Unknown error`` otherwise)
- ``authentication method negotiation failed`` (SOCKS5 method 0xFF)
- ``connection failed, unsupported address type`` (SOCKS5 reply ATYP)
- ``host name too long for SOCKS5``
- ``read failed (2/4): Broken pipe`` when the proxy closes in the middle of
  a SOCKS reply (got/wanted, counted per read as nc reads: 2 bytes of the
  SOCKS5 method reply are shown as ``(n/3)``, nc's own miscount; 4 bytes
  of the SOCKS5 reply head, then 6 or 18 of its address; 8 for SOCKS4)
- ``Proxy error: "HTTP/1.0 403 Forbidden"`` (the status line, CRs removed)
- ``proxy read: Broken pipe`` when an HTTP proxy closes before the blank line
- ``proxy read too long`` (an HTTP reply line of 1024 characters or more,
  CRs not counted), ``Too many proxy headers received`` (64 header lines)
- ``Invalid hostname``, ``hostname too long``, ``Proxy username/password too
  long``, ``Proxy auth response too long`` (HTTP CONNECT requests)
- ``Proxy authentication failed`` (`ProxyAuthError`: HTTP 407 with a user;
  nc prints it without ``nc:`` and asks for the password again)
- ``getaddrinfo("::1", "80"): Address family for hostname not supported``
  (an IPv6 destination through a SOCKS4 proxy)
- ``unsupported proxy protocol`` (an unknown ``-X`` value)

pync's own messages, where nc has none (nc speaks neither SOCKS4a nor
SOCKS5 password authentication, and does not check reply versions):

- ``connection failed, invalid SOCKSv4 reply`` / ``invalid SOCKSv5 reply``
  / ``invalid SOCKSv5 authentication reply`` (wrong version byte: garbage)
- ``authentication method negotiation failed: SOCKSv5 proxy chose method N``
  (a method that was not offered)
- ``SOCKSv5 proxy authentication failed`` (RFC 1929 status not 0)
- ``read failed during SOCKSv5 authentication (n/2): Broken pipe``
- ``host name too long for SOCKS4a``, ``user name too long for SOCKSv4``,
  ``Invalid user name`` (a NUL in a SOCKS4 user id),
  ``user name too long for SOCKS5``, ``password too long for SOCKS5``
- ``proxy read too long`` also caps the whole HTTP reply head at
  `HTTP_HEAD_MAX` bytes (nc's limits allow about 65 KiB of it, and nc does
  not count CRs at all).
- A status line is shown with control characters escaped (nc prints them raw).

No message ever contains the password.
"""

from __future__ import annotations

import base64
import re
import socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

SOCKS_PORT = 1080  # nc's default proxy port for -X 4 and -X 5
HTTP_PROXY_PORT = 3128  # nc's default proxy port for -X connect

HTTP_LINE_MAX = 1023  # nc: a reply line of 1024 characters is too long
HTTP_HEADERS_MAX = 63  # nc: the 64th line after the status must be blank
HTTP_HEAD_MAX = 72 * 1024  # every byte of the reply head, CRs included
REQUEST_MAX = 1023  # nc: a request line (and the auth line) fits in 1024

SOCKS4_ERRORS = {
    90: "Succeeded",
    91: "Request rejected or failed",
    92: "SOCKS server cannot connect to identd on the client",
    93: "Client program and identd report different user-ids",
}

SOCKS5_ERRORS = {
    0: "Succeeded",
    1: "General SOCKS server failure",
    2: "Connection not allowed by ruleset",
    3: "Network unreachable",
    4: "Host unreachable",
    5: "Connection refused",
    6: "TTL expired",
    7: "Command not supported",
    8: "Address type not supported",
}

_NOAUTH = 0
_USERPASS = 2
_NOMETHOD = 0xFF
_ATYP_IPV4 = 1
_ATYP_DOMAIN = 3
_ATYP_IPV6 = 4


class ProxyError(Exception):
    """The proxy handshake failed; ``str(exc)`` is the message, without ``pync:``."""


class ProxyAuthError(ProxyError):
    """An HTTP proxy answered 407 although credentials were sent.

    nc prints ``Proxy authentication failed`` (without ``nc:``), asks for
    the password again and retries; after three refusals it stops with
    ``Too many authentication failures``.
    """


class Handshake:
    """The common part: buffering, the end state, failures that stick.

    Subclasses set ``_request`` and implement ``_advance()`` (consume what
    ``_buf`` holds, return the bytes to send) and ``_eof_message()``.
    """

    done: bool
    leftover: bytes

    def __init__(self) -> None:
        self.done = False
        self.leftover = b""
        self._request = b""
        self._buf = bytearray()
        self._failure: Optional[ProxyError] = None

    def start(self) -> bytes:
        """The first bytes to send to the proxy."""
        return self._request

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the proxy; return the bytes to send now (maybe b"").

        Raises ProxyError if the reply is an error or not a reply at all.
        Bytes fed once the tunnel is up are added to ``leftover``.
        """
        self._check()
        if self.done:
            self.leftover += bytes(data)
            return b""
        self._buf += data
        try:
            out = self._advance()
        except ProxyError as exc:
            self._fail(exc)
            raise
        if self.done:
            self.leftover = bytes(self._buf)
            self._buf.clear()
        return out

    def eof(self, reason: str = "Broken pipe") -> None:
        """The proxy closed its side: raises ProxyError unless ``done``.

        ``reason`` is the error text shown after the read that failed, as
        nc's err() does (``Broken pipe`` at end of file, as nc says then).
        """
        self._check()
        if self.done:
            return
        exc = ProxyError(self._eof_message(reason))
        self._fail(exc)
        raise exc

    def _check(self) -> None:
        if self._failure is not None:
            raise type(self._failure)(str(self._failure))

    def _fail(self, exc: ProxyError) -> None:
        self._failure = exc
        self._buf.clear()

    def _advance(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _eof_message(self, reason: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class _FixedReads(Handshake):
    """A binary protocol read as nc reads it: n bytes, then act on them."""

    def __init__(self) -> None:
        super().__init__()
        self._need = 0
        self._then: Callable[[bytes], bytes] = self._unexpected
        self._eof_text = "read failed ({got}/{want}): {reason}"
        self._shown = 0

    def _expect(self, count: int, then: Callable[[bytes], bytes],
                shown: Optional[int] = None,
                eof_text: str = "read failed ({got}/{want}): {reason}") -> None:
        """Wait for ``count`` bytes, then call ``then`` with them.

        ``shown`` is the count an early close reports, if not ``count``.
        """
        self._need = count
        self._then = then
        self._shown = count if shown is None else shown
        self._eof_text = eof_text

    def _advance(self) -> bytes:
        out = []
        while not self.done and len(self._buf) >= self._need:
            chunk = bytes(self._buf[:self._need])
            del self._buf[:self._need]
            out.append(self._then(chunk))
        return b"".join(out)

    def _eof_message(self, reason: str) -> str:
        return self._eof_text.format(got=len(self._buf), want=self._shown, reason=reason)

    def _unexpected(self, data: bytes) -> bytes:  # pragma: no cover - never reached
        raise ProxyError("internal error: no reply expected")

    def _finish(self, data: bytes) -> bytes:
        self.done = True
        return b""


class Socks4(_FixedReads):
    """SOCKS4 to an IPv4 address, SOCKS4a (the proxy resolves) to a name."""

    def __init__(self, host: str, port: int, user: Optional[str] = None) -> None:
        super().__init__()
        userid = _encode(user or "")
        if b"\0" in userid:
            raise ProxyError("Invalid user name")
        if len(userid) > 255:
            raise ProxyError("user name too long for SOCKSv4")
        family, packed = _numeric_host(host)
        if family == socket.AF_INET6:
            raise ProxyError(f'getaddrinfo("{host[:64]}", "{str(port)[:64]}"): '
                             "Address family for hostname not supported")
        if family == socket.AF_INET:
            address, name = packed, b""
        else:  # SOCKS4a: an address 0.0.0.x (x > 0), the name after the user id
            address, name = b"\0\0\0\1", _encode(host)
            if len(name) > 255:
                raise ProxyError("host name too long for SOCKS4a")
            name += b"\0"
        self._request = (b"\x04\x01" + port.to_bytes(2, "big") + address
                         + userid + b"\0" + name)
        self._expect(8, self._on_reply)

    def _on_reply(self, reply: bytes) -> bytes:
        if reply[0] not in (0, 4):  # 0 by the protocol; some proxies echo 4
            raise ProxyError("connection failed, invalid SOCKSv4 reply")
        if reply[1] != 90:
            raise ProxyError("connection failed, SOCKSv4 error: "
                             + SOCKS4_ERRORS.get(reply[1], "Unknown error"))
        return self._finish(reply)


class Socks5(_FixedReads):
    """SOCKS5 CONNECT (RFC 1928), with username/password (RFC 1929) if a user is given.

    A host name goes to the proxy as a name (ATYP 3), as nc sends it:
    the proxy resolves it.  IPv4 and IPv6 literals go as addresses.
    """

    def __init__(self, host: str, port: int, user: Optional[str] = None,
                 password: Optional[str] = None) -> None:
        super().__init__()
        family, packed = _numeric_host(host)
        if family == socket.AF_INET:
            address = bytes([_ATYP_IPV4]) + packed
        elif family == socket.AF_INET6:
            address = bytes([_ATYP_IPV6]) + packed
        else:
            name = _encode(host)
            if len(name) > 255:
                raise ProxyError("host name too long for SOCKS5")
            address = bytes([_ATYP_DOMAIN, len(name)]) + name
        self._connect = b"\x05\x01\x00" + address + port.to_bytes(2, "big")
        self._auth = b""
        methods = bytes([_NOAUTH])
        if user is not None:
            uname, passwd = _encode(user), _encode(password or "")
            if len(uname) > 255:
                raise ProxyError("user name too long for SOCKS5")
            if len(passwd) > 255:
                raise ProxyError("password too long for SOCKS5")
            self._auth = bytes([1, len(uname)]) + uname + bytes([len(passwd)]) + passwd
            methods += bytes([_USERPASS])
        self._request = bytes([5, len(methods)]) + methods
        # nc reads the 2-byte method reply but reports its short read as (n/3).
        self._expect(2, self._on_method, shown=3)

    def _on_method(self, reply: bytes) -> bytes:
        if reply[0] != 5:
            raise ProxyError("connection failed, invalid SOCKSv5 reply")
        method = reply[1]
        if method == _NOMETHOD:
            raise ProxyError("authentication method negotiation failed")
        if method == _NOAUTH:
            return self._send_connect()
        if method == _USERPASS and self._auth:
            self._expect(2, self._on_auth, eof_text="read failed during SOCKSv5 "
                         "authentication ({got}/{want}): {reason}")
            return self._auth
        raise ProxyError("authentication method negotiation failed: "
                         f"SOCKSv5 proxy chose method {method}")

    def _on_auth(self, reply: bytes) -> bytes:
        if reply[0] not in (1, 5):  # 1 by RFC 1929; some proxies answer 5
            raise ProxyError("connection failed, invalid SOCKSv5 authentication reply")
        if reply[1] != 0:
            raise ProxyError("SOCKSv5 proxy authentication failed")
        return self._send_connect()

    def _send_connect(self) -> bytes:
        self._expect(4, self._on_reply)
        return self._connect

    def _on_reply(self, head: bytes) -> bytes:
        if head[0] != 5:
            raise ProxyError("connection failed, invalid SOCKSv5 reply")
        if head[1] != 0:
            raise ProxyError("connection failed, SOCKSv5 error: "
                             + SOCKS5_ERRORS.get(head[1], "Unknown error"))
        if head[3] == _ATYP_IPV4:
            self._expect(4 + 2, self._finish)
        elif head[3] == _ATYP_IPV6:
            self._expect(16 + 2, self._finish)
        elif head[3] == _ATYP_DOMAIN:  # nc refuses this; RFC 1928 allows it
            self._expect(1, self._on_name_length)
        else:
            raise ProxyError("connection failed, unsupported address type")
        return b""

    def _on_name_length(self, length: bytes) -> bytes:
        self._expect(length[0] + 2, self._finish)
        return b""


class HttpConnect(Handshake):
    """HTTP CONNECT, with Basic authentication if a user and password are given.

    A user without a password sends no credentials (nc's first try): a 407
    then raises `ProxyAuthError`, for the caller to ask and try again.

    Any 2xx status from HTTP/1.0 or 1.1 opens the tunnel; the headers
    that follow are read up to the blank line (CRLF or bare LF) and dropped.
    """

    _STATUS = re.compile(rb"HTTP/1\.[01] (\d\d\d)(?: |$)")

    def __init__(self, host: str, port: int, user: Optional[str] = None,
                 password: Optional[str] = None) -> None:
        super().__init__()
        if any(c in host for c in "\r\n\t []\0"):
            raise ProxyError("Invalid hostname")
        authority = _encode(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        line = b"CONNECT " + authority + b" HTTP/1.0\r\n"
        if len(line) > REQUEST_MAX:
            raise ProxyError("hostname too long")
        request = line + b"Host: " + authority + b"\r\n"
        if user is not None and password is not None:
            credentials = _encode(user) + b":" + _encode(password or "")
            token = base64.b64encode(credentials)
            if len(credentials) > REQUEST_MAX or len(token) > REQUEST_MAX:
                raise ProxyError("Proxy username/password too long")
            auth = b"Proxy-Authorization: Basic " + token + b"\r\n"
            if len(auth) > REQUEST_MAX:
                raise ProxyError("Proxy auth response too long")
            request += auth
        self._request = request + b"\r\n"
        self._user = user
        self._status: Optional[bytes] = None
        self._headers = 0
        self._scanned = 0  # bytes of _buf already searched for a newline
        self._line_length = 0  # characters other than CR in the partial line
        self._consumed = 0  # bytes of the reply head already taken from _buf

    def _advance(self) -> bytes:
        while not self.done:
            newline = self._buf.find(b"\n", self._scanned)
            end = len(self._buf) if newline < 0 else newline
            piece = self._buf[self._scanned:end]
            self._line_length += len(piece) - piece.count(b"\r")
            self._scanned = end
            if self._line_length > HTTP_LINE_MAX or self._consumed + end > HTTP_HEAD_MAX:
                raise ProxyError("proxy read too long")
            if newline < 0:
                break
            line = bytes(self._buf[:newline]).replace(b"\r", b"")
            del self._buf[:newline + 1]
            self._consumed += newline + 1
            self._scanned = self._line_length = 0
            self._on_line(line.split(b"\0", 1)[0])  # nc sees a C string
        return b""

    def _on_line(self, line: bytes) -> None:
        if self._status is None:
            self._status = line
            match = self._STATUS.match(line)
            code = match.group(1) if match else b""
            if code == b"407" and self._user is not None:
                raise ProxyAuthError("Proxy authentication failed")
            if not code.startswith(b"2"):
                raise ProxyError(f'Proxy error: "{_printable(line)}"')
        elif not line:
            self.done = True
        else:
            self._headers += 1
            if self._headers > HTTP_HEADERS_MAX:
                raise ProxyError("Too many proxy headers received")

    def _eof_message(self, reason: str) -> str:
        return f"proxy read: {reason}"


def new_handshake(kind: str, host: str, port: int, user: Optional[str] = None,
                  password: Optional[str] = None) -> Handshake:
    """The handshake for nc's ``-X`` value: ``"4"``, ``"5"`` or ``"connect"``.

    ``"4"`` speaks SOCKS4 to an IPv4 literal and SOCKS4a to any other name
    (the proxy resolves it); an IPv6 literal cannot go through SOCKS4.
    """
    if not 0 <= port <= 0xFFFF:
        raise ProxyError(f"port number invalid: {port}")
    if "\0" in host:
        raise ProxyError("Invalid hostname")
    if kind == "4":
        return Socks4(host, port, user)
    if kind == "5":
        return Socks5(host, port, user, password)
    if kind.lower() == "connect":
        return HttpConnect(host, port, user, password)
    raise ProxyError("unsupported proxy protocol")


def _encode(text: str) -> bytes:
    """Text from the command line back to its bytes (undecodable ones included)."""
    return text.encode("utf-8", "surrogateescape")


def _numeric_host(host: str) -> tuple[int, bytes]:
    """(AF_INET or AF_INET6, packed address) for a numeric host, else (0, b"").

    Numeric as nc's getaddrinfo(AI_NUMERICHOST) sees it: ``127.1`` is an
    IPv4 address; ``fe80::1%eth0`` is IPv6 (the scope is not sent).
    No name is ever looked up.
    """
    if not host:
        return 0, b""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                   0, socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return 0, b""
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = str(sockaddr[0]).split("%", 1)[0]
            return family, socket.inet_pton(family, address)
    return 0, b""


def _printable(line: bytes) -> str:
    """A reply line for a message: text, control characters escaped."""
    text = line.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)
