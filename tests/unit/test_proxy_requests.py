"""The proxy server's request parsers (sans-I/O): SOCKS5, SOCKS4/4a, HTTP.

Every request is checked whole and split at every point; arbitrary bytes
and arbitrary splits never raise anything but Refused; what a client can
make a parser hold is bounded.
"""

from __future__ import annotations

import base64
import errno
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pync.protocols.proxy_server import (
    HEAD_MAX,
    NAME_NOT_FOUND,
    HttpRequest,
    Refused,
    Socks4Request,
    Socks5Request,
    new_request,
)

CREDS = ("alice", "s3cret")


def run(parser, data: bytes, splits=()):
    """Feed data cut at the given offsets; the bytes the parser answered."""
    out = b""
    last = 0
    for cut in [*sorted(splits), len(data)]:
        out += parser.feed(data[last:cut])
        last = cut
    return out


def socks5_connect(atyp: int, addr: bytes, port: int) -> bytes:
    return bytes((5, 1, 0, atyp)) + addr + struct.pack("!H", port)


# -- SOCKS5 --------------------------------------------------------------------

@pytest.mark.parametrize("atyp, addr, host", [
    (1, bytes([127, 0, 0, 1]), "127.0.0.1"),
    (4, bytes(15) + b"\x01", "::1"),
    (3, bytes([9]) + b"localhost", "localhost"),
])
def test_socks5_connect_without_a_password(atyp, addr, host):
    data = b"\x05\x01\x00" + socks5_connect(atyp, addr, 8080) + b"early"
    for cut in range(len(data) + 1):
        p = Socks5Request()
        assert run(p, data, [cut]) == b"\x05\x00"
        assert (p.done, p.host, p.port, p.leftover) == (True, host, 8080, b"early")


def test_socks5_password_required_and_checked():
    auth = b"\x01\x05alice\x06s3cret"
    data = b"\x05\x02\x00\x02" + auth + socks5_connect(1, bytes([10, 0, 0, 1]), 22)
    for cut in range(len(data) + 1):
        p = Socks5Request(CREDS)
        assert run(p, data, [cut]) == b"\x05\x02\x01\x00"
        assert (p.host, p.port, p.user) == ("10.0.0.1", 22, "alice")


def test_socks5_wrong_password_refused_and_never_shown():
    p = Socks5Request(CREDS)
    assert p.feed(b"\x05\x01\x02") == b"\x05\x02"
    with pytest.raises(Refused) as exc:
        p.feed(b"\x01\x05alice\x05wrong")
    assert exc.value.reply == b"\x01\x01"
    assert "wrong" not in str(exc.value) and "s3cret" not in str(exc.value)


def test_socks5_no_acceptable_method():
    with pytest.raises(Refused) as exc:
        Socks5Request(CREDS).feed(b"\x05\x01\x00")  # only no-auth offered
    assert exc.value.reply == b"\x05\xff"


@pytest.mark.parametrize("command, name", [(2, "BIND"), (3, "UDP ASSOCIATE")])
def test_socks5_bind_and_udp_associate_not_supported(command, name):
    p = Socks5Request()
    p.feed(b"\x05\x01\x00")
    with pytest.raises(Refused) as exc:
        p.feed(bytes((5, command, 0, 1, 127, 0, 0, 1, 0, 80)))
    assert exc.value.reply[:2] == b"\x05\x07"  # command not supported
    assert name in str(exc.value)


def test_socks5_unknown_address_type():
    p = Socks5Request()
    p.feed(b"\x05\x01\x00")
    with pytest.raises(Refused) as exc:
        p.feed(bytes((5, 1, 0, 9, 1, 2, 3)))
    assert exc.value.reply[:2] == b"\x05\x08"


def test_socks5_replies():
    p = Socks5Request()
    assert p.connected(("127.0.0.1", 4242)) == bytes((5, 0, 0, 1, 127, 0, 0, 1)) + b"\x10\x92"
    assert p.connected(("::1", 1))[:4] == bytes((5, 0, 0, 4))
    assert p.failed(errno.ECONNREFUSED)[1] == 5
    assert p.failed(errno.ENETUNREACH)[1] == 3
    assert p.failed(NAME_NOT_FOUND)[1] == 4
    assert p.failed(errno.EPERM)[1] == 1


# -- SOCKS4 / 4a -------------------------------------------------------------

def test_socks4_and_4a():
    data = b"\x04\x01\x00\x50" + bytes([192, 168, 1, 2]) + b"bob\0rest"
    for cut in range(len(data) + 1):
        p = Socks4Request()
        run(p, data, [cut])
        assert (p.host, p.port, p.user, p.leftover) == ("192.168.1.2", 80, "bob", b"rest")
    data = b"\x04\x01\x01\xbb\x00\x00\x00\x01\0example.org\0"
    for cut in range(len(data) + 1):
        p = Socks4Request()
        run(p, data, [cut])
        assert (p.host, p.port, p.user) == ("example.org", 443, None)
    assert p.connected(("10.1.2.3", 7)) == b"\x00\x5a\x00\x07" + bytes([10, 1, 2, 3])
    assert p.failed(errno.ECONNREFUSED) == b"\x00\x5b" + bytes(6)


def test_socks4_bind_refused_and_user_id_bounded():
    with pytest.raises(Refused) as exc:
        Socks4Request().feed(b"\x04\x02\x00\x50\x7f\x00\x00\x01\0")
    assert exc.value.reply[:2] == b"\x00\x5b"
    with pytest.raises(Refused):
        Socks4Request().feed(b"\x04\x01\x00\x50\x7f\x00\x00\x01" + b"u" * 300)


# -- HTTP ----------------------------------------------------------------------

def test_http_connect():
    data = b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n\x16\x03"
    for cut in range(len(data) + 1):
        p = HttpRequest()
        assert run(p, data, [cut]) == b""
        assert (p.done, p.tunnel, p.host, p.port, p.first, p.leftover) == (
            True, True, "example.org", 443, b"", b"\x16\x03")
    assert p.connected(("127.0.0.1", 1)).startswith(b"HTTP/1.0 200 ")
    p = HttpRequest()
    p.feed(b"CONNECT [::1]:8443 HTTP/1.0\n\n")
    assert (p.host, p.port) == ("::1", 8443)


def test_http_get_goes_on_as_the_origin_servers_own_request():
    p = HttpRequest(CREDS)
    token = base64.b64encode(b"alice:s3cret")
    p.feed(b"GET http://127.0.0.1:8000/a/b?c=d HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
           b"Proxy-Authorization: Basic " + token + b"\r\nProxy-Connection: keep-alive\r\n"
           b"Accept: */*\r\n\r\nbody")
    assert (p.host, p.port, p.tunnel, p.user) == ("127.0.0.1", 8000, False, "alice")
    assert p.first == (b"GET /a/b?c=d HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAccept: */*\r\n"
                       b"Connection: close\r\n\r\n")
    assert p.leftover == b"body"
    assert p.connected(("127.0.0.1", 1)) == b""  # the server's answer is the reply
    assert p.failed(errno.ECONNREFUSED).startswith(b"HTTP/1.0 502 ")
    assert p.failed(errno.ETIMEDOUT).startswith(b"HTTP/1.0 504 ")


def test_http_hop_by_hop_headers_stop_at_the_proxy_and_the_uri_names_the_host():
    p = HttpRequest()
    p.feed(b"POST http://origin.test:8080/form HTTP/1.1\r\nHost: elsewhere.test\r\n"
           b"Connection: keep-alive, X-Secret\r\nX-Secret: for the proxy only\r\n"
           b"Keep-Alive: 300\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n"
           b"Content-Length: 5\r\nX-Kept: yes\r\n\r\nhelloGET http://origin.test/ HTTP/1.1")
    assert (p.host, p.port, p.body_length) == ("origin.test", 8080, 5)
    assert p.first == (b"POST /form HTTP/1.1\r\nHost: origin.test:8080\r\nX-Kept: yes\r\n"
                       b"Content-Length: 5\r\nConnection: close\r\n\r\n")
    # the body, then the client's next request: the relay passes on only body_length
    assert p.leftover == b"helloGET http://origin.test/ HTTP/1.1"


@pytest.mark.parametrize("headers, status", [
    (b"Transfer-Encoding: chunked\r\n", b"411"),
    (b"Content-Length: 5\r\nContent-Length: 6\r\n", b"400"),
    (b"Content-Length: -1\r\n", b"400"),
    (b"Content-Length: 0x10\r\n", b"400"),
    (b"Content-Length: " + b"9" * 5000 + b"\r\n", b"400"),  # int() itself refuses that
    (b"Content-Length: " + b"9" * 19 + b"\r\n", b"400"),
    (b"X-Bad: a\rb\r\n", b"400"),
    (b"X-Bad: a\x00b\r\n", b"400"),
    (b"X Bad: a\r\n", b"400"),  # not a header name
    (b"X-Bad\x01: a\r\n", b"400"),
])
def test_http_bodies_it_cannot_delimit_are_refused(headers, status):
    with pytest.raises(Refused) as exc:
        HttpRequest().feed(b"POST http://h/ HTTP/1.1\r\n" + headers + b"\r\n")
    assert exc.value.reply.startswith(b"HTTP/1.0 " + status + b" ")


@pytest.mark.parametrize("line", [
    b"GET http://o/a HTTP/1.1\rTransfer-Encoding: chunked",  # a bare CR ends no line here
    b"GET http://o/a\tb HTTP/1.1",
    b"GET http://o/a\x00 HTTP/1.1",
    b"GET http://o/ HTTP/1.1x",
    b"GET http://o/ HTTP/2.0",
])
def test_http_request_lines_with_control_bytes_or_odd_versions_are_refused(line):
    with pytest.raises(Refused) as exc:
        HttpRequest().feed(line + b"\r\n\r\n")
    assert exc.value.reply.startswith(b"HTTP/1.0 400 ")


def test_http_a_zero_content_length_goes_on_and_a_tab_in_a_value_stays():
    p = HttpRequest()
    p.feed(b"POST http://h/ HTTP/1.1\r\nContent-Length: 0\r\nX-T: a\tb\r\n\r\n")
    assert p.first == (b"POST / HTTP/1.1\r\nHost: h\r\nX-T: a\tb\r\nContent-Length: 0\r\n"
                       b"Connection: close\r\n\r\n")
    assert p.body_length == 0


@pytest.mark.parametrize("auth", [None, b"Basic " + base64.b64encode(b"alice:wrong"),
                                  b"Digest abc"])
def test_http_credentials_required(auth):
    head = b"CONNECT h:1 HTTP/1.1\r\n"
    if auth:
        head += b"Proxy-Authorization: " + auth + b"\r\n"
    with pytest.raises(Refused) as exc:
        HttpRequest(CREDS).feed(head + b"\r\n")
    assert exc.value.reply.startswith(b"HTTP/1.0 407 ")
    assert b'Proxy-Authenticate: Basic realm="pync"' in exc.value.reply
    assert "s3cret" not in str(exc.value) and "wrong" not in str(exc.value)


@pytest.mark.parametrize("head, status", [
    (b"PUT http://h/ HTTP/1.1", b"405"),
    (b"GET /relative HTTP/1.1", b"400"),
    (b"CONNECT nohost HTTP/1.1", b"400"),
    (b"CONNECT h:99999 HTTP/1.1", b"400"),
    (b"hello", b"400"),
    (b"GET http://u:p@h/ HTTP/1.1", b"400"),
])
def test_http_bad_requests(head, status):
    with pytest.raises(Refused) as exc:
        HttpRequest().feed(head + b"\r\n\r\n")
    assert exc.value.reply.startswith(b"HTTP/1.0 " + status + b" ")


def test_http_head_is_bounded():
    p = HttpRequest()
    with pytest.raises(Refused) as exc:
        for _ in range(100):
            p.feed(b"X" * 1024)  # no end of head in sight
    assert exc.value.reply.startswith(b"HTTP/1.0 431 ")
    assert len(p._buf) <= HEAD_MAX + 1024


def test_new_request_by_kind():
    assert isinstance(new_request("5", None), Socks5Request)
    assert isinstance(new_request("4", None), Socks4Request)
    assert isinstance(new_request("connect", CREDS), HttpRequest)


# -- whatever the client sends -----------------------------------------------

@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["5", "4", "connect"]), auth=st.booleans(),
       data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=6))
def test_arbitrary_bytes_never_crash(kind, auth, data, cuts):
    p = new_request(kind, CREDS if auth else None)
    try:
        run(p, data, [c for c in cuts if c <= len(data)])
        p.eof()
    except Refused:
        pass
    assert len(p._buf) <= HEAD_MAX + 600


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, 200), max_size=8))
def test_any_split_gives_the_same_request(cuts):
    token = base64.b64encode(b"alice:s3cret")
    requests = [
        ("5", b"\x05\x02\x00\x02\x01\x05alice\x06s3cret" + socks5_connect(3, b"\x04h.io", 1)),
        ("4", b"\x04\x01\x00\x01\x00\x00\x00\x01u\0h.io\0"),
        ("connect", b"CONNECT h.io:1 HTTP/1.1\r\nProxy-Authorization: Basic " + token
         + b"\r\n\r\n"),
    ]
    for kind, data in requests:
        whole = new_request(kind, CREDS)
        parts = new_request(kind, CREDS)
        assert run(whole, data) == run(parts, data, [c for c in cuts if c <= len(data)])
        assert (parts.done, parts.host, parts.port) == (whole.done, "h.io", 1)
