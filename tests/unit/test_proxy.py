"""Proxy handshakes: exact request bytes, nc's messages, any split of a reply."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pync.protocols import proxy
from pync.protocols.proxy import ProxyAuthError, ProxyError, new_handshake

SECRET = "s3cr3t-PW"

# -- helpers -------------------------------------------------------------------


def run(h, chunks):
    """Feed the chunks; (done, leftover, everything sent including start())."""
    sent = [h.start()]
    for chunk in chunks:
        sent.append(h.feed(chunk))
    return h.done, h.leftover, b"".join(sent)


def failure(h, data):
    """The message of the ProxyError that feeding ``data`` raises."""
    h.start()
    with pytest.raises(ProxyError) as info:
        h.feed(data)
    return str(info.value)


def eof_message(h, data=b""):
    h.start()
    assert h.feed(data) is not None
    assert not h.done
    with pytest.raises(ProxyError) as info:
        h.eof()
    return str(info.value)


def split(data, cuts):
    points = sorted({min(c, len(data)) for c in cuts})
    chunks, start = [], 0
    for p in [*points, len(data)]:
        chunks.append(data[start:p])
        start = p
    return chunks


S5_OK_V4 = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38"  # bound to 127.0.0.1:1080

# -- requests: exact bytes -----------------------------------------------------


def test_socks4_ipv4_request_is_nc_s():
    # Measured: nc -X 4 -x P 10.1.2.3 80 sends exactly this.
    assert new_handshake("4", "10.1.2.3", 80).start() == b"\x04\x01\x00P\n\x01\x02\x03\x00"


def test_socks4_user_goes_in_userid():
    h = new_handshake("4", "10.1.2.3", 80, user="bob", password=SECRET)
    assert h.start() == b"\x04\x01\x00\x50\x0a\x01\x02\x03bob\x00"


def test_socks4a_sends_the_name():
    h = new_handshake("4", "example.com", 443, user="bob")
    assert h.start() == b"\x04\x01\x01\xbb\x00\x00\x00\x01bob\x00example.com\x00"
    h = new_handshake("4", "example.com", 443)
    assert h.start() == b"\x04\x01\x01\xbb\x00\x00\x00\x01\x00example.com\x00"


def test_socks4_short_ipv4_form_is_an_address():
    # getaddrinfo(AI_NUMERICHOST) reads 127.1 as 127.0.0.1, as nc does.
    assert new_handshake("4", "127.1", 7).start() == b"\x04\x01\x00\x07\x7f\x00\x00\x01\x00"


def test_socks4_refuses_ipv6():
    with pytest.raises(ProxyError) as info:
        new_handshake("4", "::1", 80)
    assert str(info.value) == ('getaddrinfo("::1", "80"): '
                               "Address family for hostname not supported")


@pytest.mark.parametrize(("host", "address"), [
    ("10.1.2.3", b"\x01\x0a\x01\x02\x03"),
    ("127.1", b"\x01\x7f\x00\x00\x01"),
    ("::1", b"\x04" + bytes(15) + b"\x01"),
    ("fe80::1%lo", b"\x04\xfe\x80" + bytes(13) + b"\x01"),
    ("example.com", b"\x03\x0bexample.com"),
])
def test_socks5_connect_request(host, address):
    h = new_handshake("5", host, 80)
    assert h.start() == b"\x05\x01\x00"
    assert h.feed(b"\x05\x00") == b"\x05\x01\x00" + address + b"\x00\x50"
    assert not h.done


def test_socks5_with_user_offers_password_auth():
    h = new_handshake("5", "example.com", 22, user="alice", password="secret")
    assert h.start() == b"\x05\x02\x00\x02"
    assert h.feed(b"\x05\x02") == b"\x01\x05alice\x06secret"
    assert h.feed(b"\x01\x00") == b"\x05\x01\x00\x03\x0bexample.com\x00\x16"
    assert h.feed(S5_OK_V4 + b"SSH-2.0") == b""
    assert h.done
    assert h.leftover == b"SSH-2.0"


def test_socks5_empty_password():
    h = new_handshake("5", "10.0.0.1", 22, user="alice")
    h.start()
    assert h.feed(b"\x05\x02") == b"\x01\x05alice\x00"


def test_socks5_with_user_proxy_may_skip_auth():
    h = new_handshake("5", "10.0.0.1", 22, user="alice", password=SECRET)
    h.start()
    assert h.feed(b"\x05\x00") == b"\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x16"


def test_connect_request():
    h = new_handshake("connect", "example.com", 443)
    assert h.start() == (b"CONNECT example.com:443 HTTP/1.0\r\n"
                         b"Host: example.com:443\r\n\r\n")


def test_connect_request_ipv6_in_brackets():
    h = new_handshake("connect", "::1", 80)
    assert h.start() == b"CONNECT [::1]:80 HTTP/1.0\r\nHost: [::1]:80\r\n\r\n"


def test_connect_request_with_basic_auth():
    # Measured: nc sent "Proxy-Authorization: Basic Ym9iOnB3Ong=" for bob / pw:x.
    h = new_handshake("CONNECT", "10.1.2.3", 80, user="bob", password="pw:x")
    assert h.start() == (b"CONNECT 10.1.2.3:80 HTTP/1.0\r\n"
                         b"Host: 10.1.2.3:80\r\n"
                         b"Proxy-Authorization: Basic Ym9iOnB3Ong=\r\n\r\n")
    h = new_handshake("connect", "h", 1, user="u", password="")
    assert b"Proxy-Authorization: Basic " + base64.b64encode(b"u:") + b"\r\n" in h.start()
    # A user without a password yet: nc's first try, no credentials; a 407
    # asks the caller for the password.
    h = new_handshake("connect", "h", 1, user="u")
    assert b"Proxy-Authorization" not in h.start()
    with pytest.raises(ProxyAuthError):
        h.feed(b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n")


@pytest.mark.parametrize(("kind", "host", "user", "password", "message"), [
    ("5", "a" * 256, None, None, "host name too long for SOCKS5"),
    ("5", "h", "u" * 256, None, "user name too long for SOCKS5"),
    ("5", "h", "u", "p" * 256, "password too long for SOCKS5"),
    ("4", "a" * 256, None, None, "host name too long for SOCKS4a"),
    ("4", "h", "u" * 256, None, "user name too long for SOCKSv4"),
    ("connect", "a b", None, None, "Invalid hostname"),
    ("connect", "[::1]", None, None, "Invalid hostname"),
    ("connect", "h\r\nX: y", None, None, "Invalid hostname"),
    ("connect", "a" * 1002, None, None, "hostname too long"),
    ("connect", "h", "u" * 1100, "", "Proxy username/password too long"),
    ("connect", "h", "u", "p" * 800, "Proxy username/password too long"),
    ("connect", "h", "u", "p" * 743, "Proxy auth response too long"),
    ("4", "h", "a\0b", None, "Invalid user name"),
    ("5", "h\0", None, None, "Invalid hostname"),
    ("6", "h", None, None, "unsupported proxy protocol"),
    ("socks5", "h", None, None, "unsupported proxy protocol"),
])
def test_bad_requests(kind, host, user, password, message):
    with pytest.raises(ProxyError) as info:
        new_handshake(kind, host, 80, user, password)
    assert str(info.value) == message


def test_length_limits_are_inclusive():
    assert new_handshake("5", "a" * 255, 1).feed(b"\x05\x00")[4] == 255
    h = new_handshake("5", "h", 1, "u" * 255, "p" * 255)
    h.start()
    assert len(h.feed(b"\x05\x02")) == 1 + 1 + 255 + 1 + 255
    assert new_handshake("4", "a" * 255, 1).start().endswith(b"a" * 255 + b"\0")
    # nc's limit: each request line, CRLF included, fits in 1023 bytes.
    assert new_handshake("connect", "a" * 1001, 80).start().index(b"\r\n") + 2 == 1023
    lines = new_handshake("connect", "h", 1, "u", "p" * 742).start().split(b"\r\n")
    assert lines[2].startswith(b"Proxy-Authorization: ")
    assert len(lines[2]) + 2 == 1021


def test_bad_port():
    with pytest.raises(ProxyError, match=r"^port number invalid: 65536$"):
        new_handshake("5", "h", 65536)


# -- replies: success and leftover bytes ---------------------------------------


def test_socks4_success_keeps_tunnel_bytes():
    h = new_handshake("4", "10.1.2.3", 80)
    assert run(h, [b"\x00\x5a\x00\x00\x00\x00\x00\x00hello"]) == (
        True, b"hello", b"\x04\x01\x00P\n\x01\x02\x03\x00")


def test_socks5_success_ipv6_and_domain_bound_addresses():
    h = new_handshake("5", "10.1.2.3", 80)
    h.start()
    h.feed(b"\x05\x00")
    assert h.feed(b"\x05\x00\x00\x04" + bytes(16) + b"\x00\x01" + b"x") == b""
    assert (h.done, h.leftover) == (True, b"x")
    h = new_handshake("5", "10.1.2.3", 80)
    h.start()
    h.feed(b"\x05\x00")
    h.feed(b"\x05\x00\x00\x03\x03abc\x00")
    assert not h.done
    h.feed(b"\x50")
    assert (h.done, h.leftover) == (True, b"")


def test_socks5_whole_conversation_in_one_chunk():
    h = new_handshake("5", "10.1.2.3", 80, user="alice", password="pw")
    done, leftover, sent = run(h, [b"\x05\x02\x01\x00" + S5_OK_V4 + b"tunnel\x00"])
    assert (done, leftover) == (True, b"tunnel\x00")
    assert sent == (b"\x05\x02\x00\x02" + b"\x01\x05alice\x02pw"
                    + b"\x05\x01\x00\x01\x0a\x01\x02\x03\x00\x50")


def test_connect_success_keeps_tunnel_bytes():
    h = new_handshake("connect", "10.1.2.3", 80)
    reply = b"HTTP/1.1 200 Connection established\r\nX: y\r\n\r\nSSH-2.0\r\n\r\n"
    assert run(h, [reply])[:2] == (True, b"SSH-2.0\r\n\r\n")


@pytest.mark.parametrize("reply", [
    b"HTTP/1.0 200 OK\n\n",
    b"HTTP/1.0 200\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nVia: x\r\n\r\n",
    b"HTTP/1.0 299 Whatever\r\n\n",
    b"HTTP/1.0 200 OK\r\n" + b"X: y\r\n" * 63 + b"\r\n",
    b"HTTP/1.0 200 OK\r\n" + b"X" * 1023 + b"\r\r\r\n\r\n",
])
def test_connect_success_replies(reply):
    h = new_handshake("connect", "h", 1)
    assert run(h, [reply + b"data"])[:2] == (True, b"data")


def test_long_lines_byte_by_byte():
    # Line lengths are counted once, however the line arrives.
    reply = b"HTTP/1.0 200 " + b"S" * 1010 + b"\r\n" + b"X" * 1023 + b"\r\n\r\nz"
    h = new_handshake("connect", "h", 1)
    assert run(h, [bytes([b]) for b in reply])[:2] == (True, b"z")
    h = new_handshake("connect", "h", 1)
    h.start()
    for b in reply[:reply.index(b"\r\n\r\n")]:
        h.feed(bytes([b]))
    with pytest.raises(ProxyError, match=r"^proxy read too long$"):
        h.feed(b"\rX")  # the 1024th character of the line


def test_feed_after_done_goes_to_leftover():
    h = new_handshake("4", "10.1.2.3", 80)
    h.start()
    h.feed(b"\x00\x5a" + bytes(6) + b"a")
    assert h.feed(b"b") == b""
    assert h.leftover == b"ab"
    h.eof()  # the tunnel's end is not a handshake error


# -- replies: errors, in nc's words --------------------------------------------


@pytest.mark.parametrize(("code", "text"), [
    (91, "Request rejected or failed"),
    (92, "SOCKS server cannot connect to identd on the client"),
    (93, "Client program and identd report different user-ids"),
    (0, "Unknown error"),
    (255, "Unknown error"),
])
def test_socks4_errors(code, text):
    for host in ("10.1.2.3", "example.com"):
        h = new_handshake("4", host, 80)
        msg = failure(h, bytes([0, code]) + bytes(6))
        assert msg == f"connection failed, SOCKSv4 error: {text}"


@pytest.mark.parametrize(("code", "text"), [
    (1, "General SOCKS server failure"),
    (2, "Connection not allowed by ruleset"),
    (3, "Network unreachable"),
    (4, "Host unreachable"),
    (5, "Connection refused"),
    (6, "TTL expired"),
    (7, "Command not supported"),
    (8, "Address type not supported"),
    (9, "Unknown error"),
    (255, "Unknown error"),
])
def test_socks5_errors(code, text):
    h = new_handshake("5", "example.com", 80)
    msg = failure(h, b"\x05\x00" + bytes([5, code, 0, 1]) + bytes(6))
    assert msg == f"connection failed, SOCKSv5 error: {text}"


@pytest.mark.parametrize(("user", "replies", "message"), [
    (None, b"\x05\xff", "authentication method negotiation failed"),
    ("u", b"\x05\xff", "authentication method negotiation failed"),
    (None, b"\x05\x02",
     "authentication method negotiation failed: SOCKSv5 proxy chose method 2"),
    ("u", b"\x05\x01",
     "authentication method negotiation failed: SOCKSv5 proxy chose method 1"),
    ("u", b"\x05\x02\x01\x01", "SOCKSv5 proxy authentication failed"),
    ("u", b"\x05\x02\x05\x01", "SOCKSv5 proxy authentication failed"),
    ("u", b"\x05\x02\x00\x00", "connection failed, invalid SOCKSv5 authentication reply"),
    (None, b"HTTP/1.0 400 Bad Request\r\n\r\n", "connection failed, invalid SOCKSv5 reply"),
    (None, b"\x05\x00\x04\x5a" + bytes(6), "connection failed, invalid SOCKSv5 reply"),
    (None, b"\x05\x00\x05\x00\x00\x02" + bytes(6), "connection failed, unsupported address type"),
])
def test_socks5_negotiation_errors(user, replies, message):
    h = new_handshake("5", "10.1.2.3", 80, user=user, password=SECRET)
    assert failure(h, replies) == message


def test_socks4_garbage():
    h = new_handshake("4", "10.1.2.3", 80)
    assert failure(h, b"HTTP/1.0 400 Bad") == "connection failed, invalid SOCKSv4 reply"
    h = new_handshake("4", "10.1.2.3", 80)  # some proxies answer with version 4
    assert run(h, [b"\x04\x5a" + bytes(6)])[:2] == (True, b"")


@pytest.mark.parametrize(("user", "reply", "message"), [
    (None, b"HTTP/1.0 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
     'Proxy error: "HTTP/1.0 403 Forbidden"'),
    (None, b"HTTP/1.0 500 Unable to connect\r\n", 'Proxy error: "HTTP/1.0 500 Unable to connect"'),
    (None, b"HTTP/1.0 407 Proxy Authentication Required\r\n",
     'Proxy error: "HTTP/1.0 407 Proxy Authentication Required"'),
    (None, b"HTTP/2 200 OK\r\n", 'Proxy error: "HTTP/2 200 OK"'),
    (None, b"HTTP/1.0 2000 OK\r\n", 'Proxy error: "HTTP/1.0 2000 OK"'),
    (None, b"\r\n", 'Proxy error: ""'),
    (None, b"\x05\x00\n", 'Proxy error: "\\x05"'),
    (None, b"HTTP/1.0 4\x1b[31mX\x01\r\n", 'Proxy error: "HTTP/1.0 4\\x1b[31mX\\x01"'),
    ("u", b"HTTP/1.1 401 Unauthorized\r\n", 'Proxy error: "HTTP/1.1 401 Unauthorized"'),
    (None, b"HTTP/1.0 200 OK\r\n" + b"X: y\r\n" * 64,
     "Too many proxy headers received"),
    (None, b"HTTP/1.0 200 OK\r\n" + b"X" * 1024, "proxy read too long"),
    (None, b"X" * 1024, "proxy read too long"),
])
def test_connect_errors(user, reply, message):
    h = new_handshake("connect", "10.1.2.3", 80, user=user, password=SECRET)
    assert failure(h, reply) == message


def test_connect_407_with_user_is_an_auth_error():
    h = new_handshake("connect", "h", 80, user="bob", password=SECRET)
    h.start()
    with pytest.raises(ProxyAuthError) as info:
        h.feed(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
    assert str(info.value) == "Proxy authentication failed"
    with pytest.raises(ProxyAuthError):  # a failure sticks
        h.feed(b"")


def test_reply_head_is_capped_even_in_crs():
    h = new_handshake("connect", "h", 80)
    h.start()
    sent = 0
    with pytest.raises(ProxyError, match=r"^proxy read too long$"):
        while sent < 4 * proxy.HTTP_HEAD_MAX:
            h.feed(b"\r" * 4096)
            sent += 4096
    assert sent <= proxy.HTTP_HEAD_MAX


def test_failure_sticks():
    h = new_handshake("5", "h", 80)
    msg = failure(h, b"\x05\xff")
    with pytest.raises(ProxyError) as info:
        h.feed(b"\x05\x00")
    assert str(info.value) == msg
    with pytest.raises(ProxyError):
        h.eof()


# -- the proxy closes early ----------------------------------------------------


@pytest.mark.parametrize(("kind", "user", "received", "message"), [
    ("5", None, b"", "read failed (0/3): Broken pipe"),  # nc's own count
    ("5", None, b"\x05", "read failed (1/3): Broken pipe"),
    ("5", None, b"\x05\x00", "read failed (0/4): Broken pipe"),
    ("5", None, b"\x05\x00\x05\x00", "read failed (2/4): Broken pipe"),
    ("5", None, b"\x05\x00\x05\x00\x00\x01\x01\x02", "read failed (2/6): Broken pipe"),
    ("5", None, b"\x05\x00\x05\x00\x00\x04", "read failed (0/18): Broken pipe"),
    ("5", None, b"\x05\x00\x05\x00\x00\x03", "read failed (0/1): Broken pipe"),
    ("5", None, b"\x05\x00\x05\x00\x00\x03\x03ab", "read failed (2/5): Broken pipe"),
    ("5", "u", b"\x05\x02\x01",
     "read failed during SOCKSv5 authentication (1/2): Broken pipe"),
    ("4", None, b"", "read failed (0/8): Broken pipe"),
    ("4", None, b"\x00\x5a\x00", "read failed (3/8): Broken pipe"),
    ("connect", None, b"", "proxy read: Broken pipe"),
    ("connect", None, b"HTTP/1.0 200 OK\r\nX: y", "proxy read: Broken pipe"),
    ("connect", "u", b"HTTP/1.0 200 OK\r\n\r", "proxy read: Broken pipe"),
])
def test_eof_messages(kind, user, received, message):
    h = new_handshake(kind, "10.1.2.3", 80, user=user, password=SECRET)
    assert eof_message(h, received) == message


def test_eof_reason_is_the_callers():
    h = new_handshake("connect", "h", 80)
    h.start()
    with pytest.raises(ProxyError, match=r"^proxy read: Connection reset by peer$"):
        h.eof("Connection reset by peer")


# -- properties ----------------------------------------------------------------


HOSTS = ["10.1.2.3", "::1", "example.com", "127.1"]


@st.composite
def conversations(draw):
    """(kind, host, user, password, a valid reply stream up to the tunnel)."""
    kind = draw(st.sampled_from(["4", "5", "connect"]))
    host = draw(st.sampled_from(HOSTS[:1] + HOSTS[2:] if kind == "4" else HOSTS))
    user = draw(st.one_of(st.none(), st.text(max_size=8).filter(lambda u: "\0" not in u)))
    password = draw(st.one_of(st.none(), st.text(max_size=8)))
    if kind == "4":
        version = draw(st.sampled_from([b"\x00", b"\x04"]))
        reply = version + b"\x5a" + draw(st.binary(min_size=6, max_size=6))
    elif kind == "5":
        reply = b"\x05\x02\x01\x00" if user is not None and draw(st.booleans()) else b"\x05\x00"
        atyp = draw(st.sampled_from([1, 3, 4]))
        if atyp == 1:
            bound = draw(st.binary(min_size=4, max_size=4))
        elif atyp == 4:
            bound = draw(st.binary(min_size=16, max_size=16))
        else:
            name = draw(st.binary(max_size=255))
            bound = bytes([len(name)]) + name
        reply += b"\x05\x00" + draw(st.binary(min_size=1, max_size=1)) + bytes([atyp])
        reply += bound + draw(st.binary(min_size=2, max_size=2))
    else:
        version = draw(st.sampled_from([b"HTTP/1.0 ", b"HTTP/1.1 "]))
        code = b"2%02d" % draw(st.integers(0, 99))
        reason = draw(st.sampled_from([b"", b" OK", b" Connection established"]))
        eol = draw(st.sampled_from([b"\r\n", b"\n"]))
        headers = b"".join(b"X-%d: %s%s" % (i, v, eol) for i, v in enumerate(
            draw(st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b),
                          max_size=5))))
        reply = version + code + reason + eol + headers + eol
    return kind, host, user, password, reply


@settings(max_examples=150)
@given(conversations(), st.binary(max_size=40), st.lists(st.integers(0, 400), max_size=12),
       st.booleans())
def test_split_points_do_not_matter(conv, tunnel, cuts, bytewise):
    kind, host, user, password, reply = conv
    stream = reply + tunnel
    whole = run(new_handshake(kind, host, 80, user, password), [stream])
    assert whole[:2] == (True, tunnel)
    chunks = [bytes([b]) for b in stream] if bytewise else split(stream, cuts)
    assert run(new_handshake(kind, host, 80, user, password), chunks) == whole


@settings(max_examples=150)
@given(conversations(), st.data())
def test_eof_before_done_raises(conv, data):
    kind, host, user, password, reply = conv
    prefix = reply[:data.draw(st.integers(0, len(reply) - 1))]
    h = new_handshake(kind, host, 80, user, password)
    run(h, split(prefix, data.draw(st.lists(st.integers(0, len(prefix)), max_size=4))))
    assert not h.done
    with pytest.raises(ProxyError) as info:
        h.eof()
    assert SECRET not in str(info.value)


@st.composite
def garbage(draw):
    """Random bytes, or a valid reply with some bytes changed, cut or added."""
    conv = draw(conversations())
    if draw(st.booleans()):
        return conv, draw(st.binary(max_size=400))
    stream = bytearray(conv[4])
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(stream)))
        what = draw(st.sampled_from(["set", "cut", "add"]))
        if what == "set" and at < len(stream):
            stream[at] = draw(st.integers(0, 255))
        elif what == "cut":
            del stream[at:at + draw(st.integers(1, 4))]
        else:
            stream[at:at] = draw(st.binary(min_size=1, max_size=4))
    return conv, bytes(stream) + draw(st.binary(max_size=20))


@settings(max_examples=200)
@given(garbage(), st.lists(st.integers(0, 400), max_size=10), st.booleans())
def test_garbage_only_ever_raises_proxy_error(case, cuts, close):
    (kind, host, user, _password, _reply), stream = case
    h = new_handshake(kind, host, 80, user, SECRET)
    h.start()
    fed = 0
    try:
        for chunk in split(stream, cuts):
            h.feed(chunk)
            fed += len(chunk)
            if kind != "connect" and fed > 2 + 2 + 4 + 1 + 255 + 2:
                assert h.done  # a SOCKS reply is never longer than that
        if close:
            h.eof()
    except ProxyError as exc:
        assert SECRET not in str(exc)
        assert "\n" not in str(exc)
        return
    if h.done:
        assert stream.endswith(h.leftover)
    else:
        assert not close
