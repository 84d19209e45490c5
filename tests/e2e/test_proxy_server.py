"""-l -X: pync as an HTTP, SOCKS5 and SOCKS4 proxy, driven by raw clients
and by pync's own -x client (curl and ncat are in tests/interop)."""

from __future__ import annotations

import base64
import socket
import struct
import subprocess
import time

import pytest
from pynctest import TIMEOUT, Proc, Server, connect, filtered_port, pync_cmd, recv_all

pytestmark = pytest.mark.usefixtures("pync_backend")


def start_proxy(kind: str, *args: str, host: str = "127.0.0.1", verbose: str = "-v",
                numeric: bool = True) -> tuple[Proc, int]:
    proc = Proc(pync_cmd("-l", verbose, *(["-n"] if numeric else []), "-X", kind, *args,
                         host, "0"), stdin=subprocess.DEVNULL)
    m = proc.wait_stderr(r"Listening on \S+ (\d+)\n")
    return proc, int(m.group(1))


def read_reply(s: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def echo_upper() -> Server:
    return Server(lambda conn: conn.sendall(recv_all(conn).upper()))


@pytest.mark.parametrize("kind", ["connect", "5", "4"])
def test_pyncs_own_client_through_each_kind(kind):
    srv = echo_upper()
    proxy, port = start_proxy(kind)
    try:
        r = subprocess.run(pync_cmd("-N", "-X", kind, "-x", f"127.0.0.1:{port}", "127.0.0.1",
                                    str(srv.port)), input=b"through the proxy\n",
                           capture_output=True, timeout=TIMEOUT)
        assert (r.returncode, r.stdout) == (0, b"THROUGH THE PROXY\n"), r.stderr
        srv.join()
        proxy.wait_stderr(r"request for 127\.0\.0\.1 \d+\n")
    finally:
        proxy.stop()


def test_socks5_with_a_password_and_a_wrong_one():
    srv = echo_upper()
    proxy, port = start_proxy("5", "--proxy-auth", "alice:s3cret", verbose="-vv")
    try:
        ok = subprocess.run(pync_cmd("-N", "-X", "5", "--proxy-auth", "alice:s3cret", "-x",
                                     f"127.0.0.1:{port}", "127.0.0.1", str(srv.port)),
                            input=b"hi\n", capture_output=True, timeout=TIMEOUT)
        assert (ok.returncode, ok.stdout) == (0, b"HI\n"), ok.stderr
        srv.join()
        bad = subprocess.run(pync_cmd("-X", "5", "--proxy-auth", "alice:nope", "-x",
                                      f"127.0.0.1:{port}", "127.0.0.1", "9"),
                             capture_output=True, timeout=TIMEOUT)
        assert bad.returncode == 1
        assert bad.stderr == b"pync: SOCKSv5 proxy authentication failed\n"
        proxy.wait_stderr(r"refused: SOCKS5 authentication failed for user 'alice'\n")
    finally:
        proxy.stop()
    assert b"s3cret" not in bytes(proxy.err) and b"nope" not in bytes(proxy.err)


@pytest.mark.parametrize("command, code", [(2, 7), (3, 7)])
def test_socks5_bind_and_udp_associate_refused(command, code):
    proxy, port = start_proxy("5")
    try:
        with connect(port) as s:
            s.sendall(b"\x05\x01\x00")
            assert read_reply(s, 2) == b"\x05\x00"
            s.sendall(bytes((5, command, 0, 1, 127, 0, 0, 1, 0, 80)))
            reply = recv_all(s)
        assert reply[:2] == bytes((5, code)) and len(reply) == 10
    finally:
        proxy.stop()


def test_socks5_refused_destination_gets_code_5():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    proxy, port = start_proxy("5")
    try:
        with connect(port) as s:
            s.sendall(b"\x05\x01\x00" + bytes((5, 1, 0, 1, 127, 0, 0, 1)) + struct.pack("!H", dead))
            assert read_reply(s, 2) == b"\x05\x00"
            assert recv_all(s)[:2] == b"\x05\x05"  # connection refused
        proxy.wait_stderr(rf"connect to 127\.0\.0\.1 port {dead} \(tcp\) failed")
    finally:
        proxy.stop()


def test_socks5_names_are_resolved_off_the_loop():
    srv = echo_upper()
    proxy, port = start_proxy("5", numeric=False)
    try:
        with connect(port) as s:
            s.sendall(b"\x05\x01\x00" + bytes((5, 1, 0, 3, 9)) + b"localhost"
                      + struct.pack("!H", srv.port))
            assert read_reply(s, 2) == b"\x05\x00"
            head = read_reply(s, 10)
            assert head[:2] == b"\x05\x00"
            s.sendall(b"by name")
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"BY NAME"
        srv.join()
    finally:
        proxy.stop()


def test_http_get_and_connect_and_credentials():
    def origin(conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(1000)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n" + head[:3])

    srv = Server(origin)
    proxy, port = start_proxy("connect", "--proxy-auth", "bob:pw")
    try:
        with connect(port) as s:  # no credentials: 407
            s.sendall(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = recv_all(s)
        assert reply.startswith(b"HTTP/1.0 407 ")
        assert b'Proxy-Authenticate: Basic realm="pync"\r\n' in reply
        token = base64.b64encode(b"bob:pw")
        with connect(port) as s:
            s.sendall(b"GET http://127.0.0.1:%d/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Proxy-Authorization: Basic %s\r\n\r\n" % (srv.port, token))
            assert recv_all(s) == b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nGET"
        srv.join()
    finally:
        proxy.stop()


def test_a_passed_on_request_is_all_the_origin_ever_sees():
    """A client's second request on the connection never reaches the origin
    (the proxy answered the first only), nor its credentials or hop-by-hop
    headers; the Host is the URI's."""
    seen: list[bytes] = []

    def origin(conn: socket.socket) -> None:
        got = b""
        while b"\r\n\r\n" not in got:
            got += conn.recv(1000)
        while len(got) < got.index(b"\r\n\r\n") + 4 + 5:  # the body: 5 bytes
            got += conn.recv(1000)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.shutdown(socket.SHUT_WR)
        seen.append(got + recv_all(conn))  # whatever else comes, until pync closes

    srv = Server(origin)
    proxy, port = start_proxy("connect", "--proxy-auth", "bob:pw")
    token = base64.b64encode(b"bob:pw")
    try:
        with connect(port) as s:
            s.sendall(b"POST http://127.0.0.1:%d/form HTTP/1.1\r\nHost: evil.test\r\n"
                      b"Proxy-Authorization: Basic %s\r\nConnection: keep-alive\r\n"
                      b"Content-Length: 5\r\n\r\nhello"
                      b"GET http://127.0.0.1:%d/second HTTP/1.1\r\nHost: x\r\n"
                      b"Proxy-Authorization: Basic %s\r\n\r\n"
                      % (srv.port, token, srv.port, token))
            assert recv_all(s) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        srv.join()
    finally:
        proxy.stop()
    assert seen == [b"POST /form HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 5\r\n"
                    b"Connection: close\r\n\r\nhello" % srv.port]


def test_a_chunked_request_is_refused_with_411():
    proxy, port = start_proxy("connect")
    try:
        with connect(port) as s:
            s.sendall(b"POST http://127.0.0.1:1/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5\r\nhello\r\n0\r\n\r\n")
            assert recv_all(s).startswith(b"HTTP/1.0 411 Length Required\r\n")
        proxy.wait_stderr(r"refused: a chunked request body\n")
    finally:
        proxy.stop()


def test_a_content_length_past_reason_gets_400_and_the_proxy_goes_on():
    """Python's int() refuses a 5,000-digit number with its own error: that
    must be the client's 400, not the proxy's end."""
    srv = echo_upper()
    proxy, port = start_proxy("connect")
    try:
        with connect(port) as s:
            s.sendall(b"POST http://127.0.0.1:9/ HTTP/1.1\r\nContent-Length: " + b"9" * 5000
                      + b"\r\n\r\n")
            assert recv_all(s).startswith(b"HTTP/1.0 400 Bad Request\r\n")
        with connect(port) as s:  # the next client is served
            s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\nhi" % srv.port)
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"HTTP/1.0 200 Connection established\r\n\r\nHI"
        srv.join()
    finally:
        proxy.stop()


def test_a_client_that_leaves_during_the_connect_is_let_go():
    """The destination never answers the connect; the client gives up (a
    reset): the proxy drops that attempt at once, not after the connect's
    own timeout.  (A half-close is no leaving: see the test above.)"""
    keep: list[socket.socket] = []
    silent = filtered_port(keep)
    proxy, port = start_proxy("connect")
    try:
        s = connect(port)
        s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % silent)
        proxy.wait_stderr(rf"request for 127\.0\.0\.1 {silent}\n")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        proxy.wait_stderr(r"left before its tunnel was open\n")
    finally:
        proxy.stop()
        for k in keep:
            k.close()


def test_a_slow_client_is_cut_off_by_w():
    proxy, port = start_proxy("connect", "-w", "1")
    try:
        with connect(port) as s:
            s.sendall(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n")  # and never the blank line
            started = time.monotonic()
            assert recv_all(s) == b""
            assert time.monotonic() - started < TIMEOUT / 2
        proxy.wait_stderr(r"timed out before its request was whole\n")
    finally:
        proxy.stop()


def test_an_open_proxy_is_said_to_be_one():
    proxy, _ = start_proxy("5", host="0.0.0.0")
    try:
        proxy.wait_stderr(r"pync: warning: a proxy on 0\.0\.0\.0 port \d+ serves anyone who "
                          r"can reach it \(--allow or --proxy-auth restricts it\)\n")
    finally:
        proxy.stop()
    quiet, _ = start_proxy("5")  # loopback: nobody else can reach it
    quiet.stop()
    assert b"warning" not in bytes(quiet.err)


def test_access_lists_apply():
    proxy, port = start_proxy("5", "--deny", "127.0.0.1")
    try:
        with connect(port) as s:
            assert recv_all(s) == b""
        proxy.wait_stderr(r"new connection denied: not allowed \(127\.0\.0\.1\)\n")
    finally:
        proxy.stop()


@pytest.mark.parametrize("argv, message", [
    (["-l", "-X", "4", "--proxy-auth", "u:p", "1080"],
     "SOCKS4 carries no password: a proxy server that asks for one (-P, --proxy-auth) "
     "needs -X 5 or -X connect"),
    (["-l", "-X", "5", "-u", "1080"], "a proxy server (-l -X) speaks TCP: not with -u"),
    (["-l", "-X", "5", "-e", "cat", "1080"], "cannot use -e/-c with a proxy server (-l -X)"),
    (["-l", "-x", "1.2.3.4", "1080"], "no proxy support for listen"),
    (["-l", "-X", "5", "-N", "1080"], "cannot use -N with a proxy server (-l -X)"),
    (["-l", "-X", "5", "-q", "0", "1080"], "cannot use -q with a proxy server (-l -X)"),
    (["-l", "-X", "5", "-d", "1080"], "cannot use -d with a proxy server (-l -X)"),
])
def test_bad_proxy_server_command_lines(argv, message):
    r = subprocess.run(pync_cmd(*argv), capture_output=True, timeout=TIMEOUT)
    assert (r.returncode, r.stderr) == (1, f"pync: {message}\n".encode())
