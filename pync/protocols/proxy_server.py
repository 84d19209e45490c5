"""The proxy server's side of SOCKS4, SOCKS4a, SOCKS5 and HTTP, without I/O.

``pync -l 3128 -X connect``, ``-X 5`` and ``-X 4`` (proxy.py holds the
client's side).  Each request is a small state machine fed what the client
sends, chunk by chunk, whatever the split:

* ``feed(data)`` returns the bytes to send back now (SOCKS5's method
  choice and its authentication status; usually nothing) and sets ``done``
  once the request is whole: then ``host`` and ``port`` name the
  destination, ``first`` holds the bytes to send it before anything else
  (an HTTP request rewritten for the origin server) and ``leftover`` what
  the client sent after its request (the tunnel's first bytes);
* ``connected(address)`` is the reply once the tunnel is open (SOCKS's
  success with the outbound socket's address, HTTP's ``200 Connection
  established``, or nothing for an HTTP GET: the server's answer is it);
* ``failed(errno)`` is the reply when the destination cannot be reached,
  in the protocol's words (SOCKS5 ``Connection refused`` is code 5);
* a request that cannot be served raises `Refused`, whose ``reply`` is
  sent before the connection is closed, and whose text says why (never a
  password).

Everything a client can make a parser hold is bounded: an HTTP head of
HEAD_MAX bytes, SOCKS fields of 255 bytes.  Requests are checked against
``--proxy-auth``: HTTP Basic (``407`` with ``Proxy-Authenticate``
otherwise), SOCKS5 user/password (RFC 1929); SOCKS4 has no password.
"""

from __future__ import annotations

import base64
import errno
import ipaddress
import re
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

HEAD_MAX = 16 * 1024   # an HTTP request head: request line and headers
HEADERS_MAX = 100
CONTENT_LENGTH_DIGITS = 18  # more is no body anyone sends (and int() refuses > 4300)
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")  # in a request line or a header value
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header's name (RFC 9110)
FIELD_MAX = 255        # a SOCKS user, password or host name

# SOCKS5 reply codes (RFC 1928)
SUCCEEDED = 0
GENERAL_FAILURE = 1
NETWORK_UNREACHABLE = 3
HOST_UNREACHABLE = 4
CONNECTION_REFUSED = 5
TTL_EXPIRED = 6
COMMAND_NOT_SUPPORTED = 7
ADDRESS_TYPE_NOT_SUPPORTED = 8

_SOCKS5_CODES = {
    errno.ECONNREFUSED: CONNECTION_REFUSED, errno.ENETUNREACH: NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: HOST_UNREACHABLE, errno.ETIMEDOUT: TTL_EXPIRED,
    errno.EHOSTDOWN: HOST_UNREACHABLE,
}
# The destination's name did not resolve (the caller's errno for it).
NAME_NOT_FOUND = -1


class Refused(Exception):
    """The request is refused: send ``reply``, then close.  ``str(exc)``
    says why, for -v (never with a password in it)."""

    def __init__(self, reason: str, reply: bytes = b"") -> None:
        super().__init__(reason)
        self.reply = reply


class ServerHandshake:
    """What every request parser has: its state and its bounded buffer."""

    def __init__(self) -> None:
        self.done = False
        self.host = ""
        self.port = 0
        self.first = b""      # bytes for the destination before the client's
        self.body_length = 0  # with first: how many of the client's bytes follow it
        self.leftover = b""   # what the client sent after its request
        self.user: Optional[str] = None  # who authenticated (for -v), if anyone
        self._buf = bytearray()

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.leftover += data
            return b""
        self._buf += data
        out = self._advance()
        if self.done:
            self.leftover += bytes(self._buf)
            self._buf.clear()
        return out

    def eof(self) -> None:
        """The client closed before its request was whole."""
        if not self.done:
            raise Refused("the client closed before its request was whole")

    def _advance(self) -> bytes:
        raise NotImplementedError

    def connected(self, address: tuple) -> bytes:
        raise NotImplementedError

    def failed(self, code: int) -> bytes:
        raise NotImplementedError


def _port(value: int) -> int:
    if not 0 < value < 65536:
        raise ValueError(value)
    return value


# -- SOCKS5 ------------------------------------------------------------------

class Socks5Request(ServerHandshake):
    """RFC 1928: method choice, RFC 1929 authentication when a password is
    required, then CONNECT (BIND and UDP ASSOCIATE are refused: code 7)."""

    def __init__(self, credentials: Optional[tuple[str, str]] = None) -> None:
        super().__init__()
        self._credentials = credentials
        self._stage = self._greeting

    def _advance(self) -> bytes:
        out = bytearray()
        while not self.done:
            got = self._stage()
            if got is None:
                break
            out += got
        return bytes(out)

    def _take(self, n: int) -> Optional[bytes]:
        if len(self._buf) < n:
            return None
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _greeting(self) -> Optional[bytes]:
        if len(self._buf) < 2:
            return None
        if self._buf[0] != 5:
            raise Refused("not a SOCKS5 request")
        count = self._buf[1]
        head = self._take(2 + count)
        if head is None:
            return None
        methods = head[2:]
        wanted = 2 if self._credentials is not None else 0
        if wanted not in methods:
            raise Refused("no acceptable SOCKS5 authentication method", b"\x05\xff")
        self._stage = self._auth if wanted == 2 else self._request
        return bytes((5, wanted))

    def _auth(self) -> Optional[bytes]:
        buf = self._buf
        if len(buf) < 2:
            return None
        if buf[0] != 1:
            raise Refused("not a SOCKS5 user/password request", b"\x01\x01")
        ulen = buf[1]
        if len(buf) < 2 + ulen + 1:
            return None
        plen = buf[2 + ulen]
        data = self._take(3 + ulen + plen)
        if data is None:
            return None
        user = data[2:2 + ulen].decode("utf-8", "surrogateescape")
        password = data[3 + ulen:].decode("utf-8", "surrogateescape")
        assert self._credentials is not None
        if (user, password) != self._credentials:
            raise Refused(f"SOCKS5 authentication failed for user {user!r}", b"\x01\x01")
        self.user = user
        self._stage = self._request
        return b"\x01\x00"

    def _request(self) -> Optional[bytes]:
        buf = self._buf
        if len(buf) < 5:
            return None
        if buf[0] != 5:
            raise Refused("not a SOCKS5 request", self._reply(GENERAL_FAILURE))
        command, atyp = buf[1], buf[3]
        if atyp == 1:
            size = 4
        elif atyp == 4:
            size = 16
        elif atyp == 3:
            size = 1 + buf[4]
        else:
            raise Refused(f"SOCKS5 address type {atyp} not supported",
                          self._reply(ADDRESS_TYPE_NOT_SUPPORTED))
        data = self._take(4 + size + 2)
        if data is None:
            return None
        if command != 1:
            name = {2: "BIND", 3: "UDP ASSOCIATE"}.get(command, f"command {command}")
            raise Refused(f"SOCKS5 {name} not supported", self._reply(COMMAND_NOT_SUPPORTED))
        raw = data[4:4 + size]
        if atyp == 1:
            self.host = str(ipaddress.IPv4Address(raw))
        elif atyp == 4:
            self.host = str(ipaddress.IPv6Address(raw))
        else:
            self.host = raw[1:].decode("utf-8", "surrogateescape")
        try:
            self.port = _port(struct.unpack("!H", data[-2:])[0])
        except ValueError:
            raise Refused("SOCKS5 request for port 0", self._reply(GENERAL_FAILURE)) from None
        if not self.host or "\0" in self.host:
            raise Refused("SOCKS5 request for no host", self._reply(GENERAL_FAILURE))
        self.done = True
        return b""

    @staticmethod
    def _reply(code: int, address: tuple = ("0.0.0.0", 0)) -> bytes:
        ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        atyp = 1 if ip.version == 4 else 4
        return bytes((5, code, 0, atyp)) + ip.packed + struct.pack("!H", address[1])

    def connected(self, address: tuple) -> bytes:
        return self._reply(SUCCEEDED, address)

    def failed(self, code: int) -> bytes:
        if code == NAME_NOT_FOUND:
            return self._reply(HOST_UNREACHABLE)
        return self._reply(_SOCKS5_CODES.get(code, GENERAL_FAILURE))


# -- SOCKS4 and 4a -----------------------------------------------------------

class Socks4Request(ServerHandshake):
    """SOCKS4 CONNECT to an address, SOCKS4a to a name (the address
    0.0.0.x, x > 0, then the name).  It carries a user id, no password."""

    def _advance(self) -> bytes:
        buf = self._buf
        if len(buf) < 8:
            return b""
        if buf[0] != 4:
            raise Refused("not a SOCKS4 request")
        end = buf.find(b"\0", 8)
        if end < 0:
            if len(buf) > 8 + FIELD_MAX:
                raise Refused("SOCKS4 user id too long", self._reply(91))
            return b""
        address = bytes(buf[4:8])
        name_end = end
        if address[:3] == b"\0\0\0" and address[3]:  # 4a: a name follows
            name_end = buf.find(b"\0", end + 1)
            if name_end < 0:
                if len(buf) > end + 1 + FIELD_MAX:
                    raise Refused("SOCKS4a host name too long", self._reply(91))
                return b""
            self.host = bytes(buf[end + 1:name_end]).decode("utf-8", "surrogateescape")
        else:
            self.host = str(ipaddress.IPv4Address(address))
        command = buf[1]
        port = struct.unpack("!H", bytes(buf[2:4]))[0]
        self.user = bytes(buf[8:end]).decode("utf-8", "surrogateescape") or None
        del buf[:name_end + 1]
        if command != 1:
            raise Refused(f"SOCKS4 command {command} not supported (only CONNECT)",
                          self._reply(91))
        if not port or not self.host:
            raise Refused("SOCKS4 request for no host or port 0", self._reply(91))
        self.port = port
        self.done = True
        return b""

    @staticmethod
    def _reply(code: int, address: tuple = ("0.0.0.0", 0)) -> bytes:
        try:
            packed = ipaddress.IPv4Address(str(address[0])).packed
        except ValueError:
            packed = bytes(4)  # an IPv6 outbound socket: SOCKS4 cannot say it
        return bytes((0, code)) + struct.pack("!H", address[1]) + packed

    def connected(self, address: tuple) -> bytes:
        return self._reply(90, address)

    def failed(self, code: int) -> bytes:
        return self._reply(91)


# -- HTTP --------------------------------------------------------------------

# Hop-by-hop and proxy headers (RFC 7230 6.1), never passed on; the Host is
# the URI's (5.4); bodies are Content-Length ones (chunked ones are refused).
_HOP_BY_HOP = {b"proxy-authorization", b"proxy-authenticate", b"proxy-connection",
               b"connection", b"keep-alive", b"te", b"trailer", b"upgrade", b"host",
               b"transfer-encoding", b"content-length"}
_METHODS = {b"GET", b"HEAD", b"POST"}


def _status(code: int, reason: str, extra: bytes = b"") -> bytes:
    body = f"{code} {reason}\n".encode()
    return (f"HTTP/1.0 {code} {reason}\r\n".encode() + extra
            + b"Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % len(body) + body)


class HttpRequest(ServerHandshake):
    """An HTTP proxy request: CONNECT host:port, or GET, HEAD or POST of an
    absolute http:// URI, sent on to the origin server as its own request,
    one per connection (``Connection: close``): its head (``first``) and
    ``body_length`` bytes of body, then nothing more of what the client
    sends (a next request on the connection never reaches that server).
    With credentials, each request must carry them
    (``Proxy-Authorization: Basic``)."""

    def __init__(self, credentials: Optional[tuple[str, str]] = None) -> None:
        super().__init__()
        self._token: Optional[bytes] = None
        if credentials is not None:
            user, password = credentials
            self._token = base64.b64encode(
                (user + ":" + password).encode("utf-8", "surrogateescape"))
            self._user = user
        self._scanned = 0
        self.tunnel = False  # CONNECT (else a request passed on)

    def _advance(self) -> bytes:
        buf = self._buf
        end = buf.find(b"\r\n\r\n", max(self._scanned - 3, 0))
        cut = 4
        lf = buf.find(b"\n\n", max(self._scanned - 1, 0))
        if lf >= 0 and (end < 0 or lf < end):
            end, cut = lf, 2
        if end < 0:
            if len(buf) > HEAD_MAX:
                raise Refused("request head too large",
                              _status(431, "Request Header Fields Too Large"))
            self._scanned = len(buf)
            return b""
        if end + cut > HEAD_MAX:
            raise Refused("request head too large", _status(431, "Request Header Fields Too Large"))
        head = bytes(buf[:end])
        del buf[:end + cut]
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        if len(lines) > HEADERS_MAX + 1:
            raise Refused("too many request headers",
                          _status(431, "Request Header Fields Too Large"))
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] not in (b"HTTP/1.0", b"HTTP/1.1") \
                or _CONTROL.search(lines[0]):
            raise Refused("not an HTTP request", _status(400, "Bad Request"))
        method, target, version = parts
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.fullmatch(name) or _CONTROL.search(value.replace(b"\t", b" ")):
                raise Refused("malformed request header", _status(400, "Bad Request"))
            headers.append((name.lower(), name, value.strip(b" \t")))
        self._check_credentials(headers)
        if method == b"CONNECT":
            self.host, self.port = _authority(target, default=None)
            self.tunnel = True
        elif method in _METHODS:
            self._pass_on(method, target, version, headers)
        else:
            allow = b"Allow: CONNECT, GET, HEAD, POST\r\n"
            raise Refused(f"method {method.decode('latin-1')!r} not supported",
                          _status(405, "Method Not Allowed", allow))
        self.done = True
        return b""

    def _check_credentials(self, headers: list[tuple[bytes, bytes, bytes]]) -> None:
        if self._token is None:
            return
        for lower, _, value in headers:
            if lower == b"proxy-authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"basic" and token.strip() == self._token:
                    self.user = self._user
                    return
        raise Refused("proxy authentication required or failed",
                      _status(407, "Proxy Authentication Required",
                              b'Proxy-Authenticate: Basic realm="pync"\r\n'))

    def _pass_on(self, method: bytes, target: bytes, version: bytes,
                 headers: list[tuple[bytes, bytes, bytes]]) -> None:
        """The request for the origin server: origin-form, hop-by-hop and
        proxy headers dropped, one request per connection."""
        if not target.lower().startswith(b"http://"):
            raise Refused("not an absolute http:// URI", _status(400, "Bad Request"))
        rest = target[7:]
        slash = rest.find(b"/")
        authority, path = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
        if b"@" in authority:
            raise Refused("credentials in the URI", _status(400, "Bad Request"))
        self.host, self.port = _authority(authority, default=80)
        length = _body_length(headers)
        self.body_length = length or 0
        listed = {token.strip().lower() for lower, _, value in headers if lower == b"connection"
                  for token in value.split(b",")}
        out = [method + b" " + path + b" " + version, b"Host: " + authority]
        for lower, name, value in headers:
            if lower in _HOP_BY_HOP or lower in listed:
                continue
            out.append(name + b": " + value)
        if length is not None:  # as the client gave it (a POST's 0 too)
            out.append(b"Content-Length: %d" % length)
        out.append(b"Connection: close")
        self.first = b"\r\n".join(out) + b"\r\n\r\n"

    def connected(self, address: tuple) -> bytes:
        return b"HTTP/1.0 200 Connection established\r\n\r\n" if self.tunnel else b""

    def failed(self, code: int) -> bytes:
        if code == errno.ETIMEDOUT:
            return _status(504, "Gateway Timeout")
        return _status(502, "Bad Gateway")


def _body_length(headers: list[tuple[bytes, bytes, bytes]]) -> Optional[int]:
    """The body a passed-on request carries: its Content-Length (one value;
    None without one)."""
    if any(lower == b"transfer-encoding" for lower, _, _ in headers):
        raise Refused("a chunked request body", _status(411, "Length Required"))
    lengths = {value for lower, _, value in headers if lower == b"content-length"}
    if not lengths:
        return None
    value = next(iter(lengths))
    if len(lengths) > 1 or not value.isdigit() or len(value) > CONTENT_LENGTH_DIGITS:
        raise Refused("a bad Content-Length", _status(400, "Bad Request"))
    return int(value)


def _authority(text: bytes, default: Optional[int]) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` (or without the port, where there is a default)."""
    try:
        value = text.decode("ascii")
    except UnicodeDecodeError:
        raise Refused("host name not ASCII", _status(400, "Bad Request")) from None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or (rest and not rest.startswith(":")):
            raise Refused("malformed host", _status(400, "Bad Request"))
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            host, port_text = value, ""
    try:
        port = _port(int(port_text)) if port_text else default
    except ValueError:
        port = None
    if port is None or not host or any(c in host for c in " \t\0/?#@"):
        raise Refused("malformed host or port", _status(400, "Bad Request"))
    return host, port


def new_request(kind: str, credentials: Optional[tuple[str, str]]) -> ServerHandshake:
    """The parser for ``-X`` (``"5"``, ``"4"`` or ``"connect"``) in listen mode."""
    if kind == "5":
        return Socks5Request(credentials)
    if kind == "4":
        return Socks4Request()
    return HttpRequest(credentials)
