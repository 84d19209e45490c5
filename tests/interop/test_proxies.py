"""pync through real proxies: microsocks (SOCKS5), danted (SOCKS4/5),
tinyproxy and ncat (HTTP CONNECT), compared with the real OpenBSD nc.

The strongest check here runs nc and pync with the same arguments against
the same proxy and destination and wants the same stdout bytes, the same exit
status and the same stderr, ``nc:`` read as ``pync:``.

The proxies cannot all listen on port 0: they get a `free_port()` and the
fixture waits, by connecting, until they accept.  With
PYNC_REQUIRE_INTEROP=1 (CI) a missing tool fails the test.
"""

from __future__ import annotations

import os
import pwd
import re
import selectors
import shutil
import socket
import subprocess
import threading
import time
from typing import Optional

import pytest
from pynctest import PYNC, TIMEOUT, Proc, Server, free_port, pync_cmd, run_pync
from pynctest import require_tool as tool

pytestmark = pytest.mark.usefixtures("pync_backend")

# What the client sends (every byte value) and what the destination answers.
REQUEST = bytes(range(256)) * 8 + b"end of request\n"
ANSWER = b"answer from the destination\n" + bytes(range(255, -1, -1)) * 4


# -- peers ---------------------------------------------------------------

def danted_path() -> str:
    """danted lives in /usr/sbin, which a user's PATH may lack."""
    path = shutil.which("danted") or shutil.which("danted", path="/usr/sbin:/usr/local/sbin")
    return path or tool("danted")


def wait_accepting(peer: Proc, port: int, host: str = "127.0.0.1") -> None:
    """Block until peer accepts connections on host:port (bounded).

    The pause between attempts is a bounded wait for the peer to exit, so
    a peer that dies (bad config) fails at once with its own words.
    """
    deadline = time.monotonic() + TIMEOUT
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(TIMEOUT)
            try:
                s.connect((host, port))
                return
            except OSError:
                pass
        try:
            peer.p.wait(0.02)
        except subprocess.TimeoutExpired:
            if time.monotonic() < deadline:
                continue
        stop(peer)
        pytest.fail(f"{peer.argv[0]} never accepted on {host} port {port}: "
                    f"{bytes(peer.out + peer.err)!r}")


def stop(peer: Proc) -> None:
    """SIGTERM (danted's mother then stops its children), SIGKILL if need be."""
    if peer.p.poll() is None:
        peer.p.terminate()
        try:
            peer.p.wait(5)
        except subprocess.TimeoutExpired:
            peer.kill()


def start_peer(argv: list[str], port: int, host: str = "127.0.0.1") -> Proc:
    peer = Proc(argv, stdin=subprocess.DEVNULL)
    wait_accepting(peer, port, host)
    return peer


@pytest.fixture(scope="module")
def microsocks():
    """A SOCKS5 proxy without authentication."""
    port = free_port()
    peer = start_peer([tool("microsocks"), "-i", "127.0.0.1", "-p", str(port)], port)
    yield port
    stop(peer)


@pytest.fixture(scope="module")
def microsocks_auth():
    """A SOCKS5 proxy that wants alice / secret (RFC 1929)."""
    port = free_port()
    peer = start_peer([tool("microsocks"), "-i", "127.0.0.1", "-p", str(port),
                       "-u", "alice", "-P", "secret"], port)
    yield port
    stop(peer)


def _tinyproxy(tmp_path_factory, *extra: str):
    port = free_port()
    conf = tmp_path_factory.mktemp("tinyproxy") / "tinyproxy.conf"
    # No ConnectPort line: CONNECT is allowed to any port.
    conf.write_text("\n".join([f"Port {port}", "Listen 127.0.0.1", "Allow 127.0.0.1",
                               "Timeout 10", "MaxClients 20", "LogLevel Connect",
                               *extra]) + "\n")
    return port, start_peer([tool("tinyproxy"), "-d", "-c", str(conf)], port)


@pytest.fixture(scope="module")
def tinyproxy(tmp_path_factory):
    port, peer = _tinyproxy(tmp_path_factory)
    yield port
    stop(peer)


@pytest.fixture(scope="module")
def tinyproxy_auth(tmp_path_factory):
    port, peer = _tinyproxy(tmp_path_factory, "BasicAuth alice secret")
    yield port
    stop(peer)


def _ncat_http(auth: str = ""):
    """ncat as an HTTP proxy (wanting ``auth``, user:password, if given)."""
    port = free_port()
    wants = ["--proxy-auth", auth] if auth else []
    peer = start_peer([tool("ncat"), "-l", "-k", "--proxy-type", "http", *wants,
                       "127.0.0.1", str(port)], port)
    yield port
    stop(peer)


@pytest.fixture(scope="module")
def ncat_http():
    yield from _ncat_http()


@pytest.fixture(scope="module")
def ncat_http_auth():
    """ncat's HTTP proxy wanting alice:secret: it answers 407 to a wrong password."""
    yield from _ncat_http("alice:secret")


@pytest.fixture(scope="module")
def danted(tmp_path_factory):
    """Dante, SOCKS4 and SOCKS5 without authentication, in the foreground."""
    path = danted_path()
    port = free_port()
    me = pwd.getpwuid(os.geteuid()).pw_name  # root here: danted wants a user to run as
    conf = tmp_path_factory.mktemp("danted") / "danted.conf"
    conf.write_text(f"""\
logoutput: stderr
internal: 127.0.0.1 port = {port}
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: {me}
user.unprivileged: {me}
client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
""")
    peer = start_peer([path, "-f", str(conf), "-N", "1",
                       "-p", str(conf.with_suffix(".pid"))], port)
    yield port
    stop(peer)


# -- destinations ----------------------------------------------------------

class Dest:
    """The destination, on 127.0.0.1: for each of ``conns`` connections,
    send ``banner``, read ``want`` bytes (None: to EOF), send ``reply``, close.

    ``received`` holds what each connection read.
    """

    def __init__(self, conns: int = 1, want: Optional[int] = len(REQUEST),
                 reply: bytes = ANSWER, banner: bytes = b"") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.want, self.reply, self.banner = want, reply, banner
        self.received: list[bytes] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, args=(conns,), daemon=True)
        self.thread.start()

    def _serve(self, conns: int) -> None:
        self.sock.settimeout(TIMEOUT)
        try:
            for _ in range(conns):
                conn, _ = self.sock.accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    conn.sendall(self.banner)
                    got = bytearray()
                    while self.want is None or len(got) < self.want:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        got += chunk
                    self.received.append(bytes(got))
                    conn.sendall(self.reply)
        except BaseException as exc:
            self.errors.append(exc)

    def join(self) -> list[bytes]:
        self.thread.join(TIMEOUT)
        self.sock.close()
        assert not self.thread.is_alive(), "destination still waiting for a connection"
        if self.errors:
            raise self.errors[0]
        return self.received


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    return free_port()


# -- nc against pync ---------------------------------------------------------

def as_pync(nc_stderr: bytes) -> bytes:
    return re.sub(rb"(?m)^nc: ", b"pync: ", nc_stderr)


def nc_and_pync(*args: str, input: bytes = b"",
                env: Optional[dict] = None, **kw) -> subprocess.CompletedProcess:
    """Run nc, then pync, with the same arguments; they must agree on
    stdout, stderr (nc: read as pync:) and exit status.  Returns pync's run."""
    nc = subprocess.run([tool("nc"), *args], input=input, capture_output=True,
                        timeout=TIMEOUT, env=env, **kw)
    ours = subprocess.run(pync_cmd(*args), input=input, capture_output=True,
                          timeout=TIMEOUT, env=env, **kw)
    assert (ours.returncode, ours.stderr, ours.stdout) == (
        nc.returncode, as_pync(nc.stderr), nc.stdout), f"nc: {nc!r}\npync: {ours!r}"
    return ours


PROXIES = {  # name: (fixture, -X value)
    "microsocks-socks5": ("microsocks", "5"),
    "danted-socks4": ("danted", "4"),
    "danted-socks5": ("danted", "5"),
    "tinyproxy-connect": ("tinyproxy", "connect"),
    "ncat-connect": ("ncat_http", "connect"),
}

REFUSED = {  # what each proxy makes of a destination that refuses
    "microsocks-socks5": "connection failed, SOCKSv5 error: Connection refused",
    "danted-socks4": "connection failed, SOCKSv4 error: Request rejected or failed",
    "danted-socks5": "connection failed, SOCKSv5 error: Connection refused",
    "tinyproxy-connect": 'Proxy error: "HTTP/1.0 500 Unable to connect"',
    "ncat-connect": 'Proxy error: "HTTP/1.0 504 Gateway Timeout"',
}


def proxy_port(request, name: str) -> int:
    return request.getfixturevalue(PROXIES[name][0])


# -- SOCKS5: microsocks --------------------------------------------------------

def test_socks5_microsocks_both_ways(microsocks):
    """-N through microsocks: every byte both ways, exit 0, nothing on stderr."""
    port = microsocks
    payload = os.urandom(200 * 1024) + b"\nlast line\n"
    dest = Dest(want=None, banner=b"hello through socks\n", reply=b"")
    pync = Proc(pync_cmd("-N", "-x", f"127.0.0.1:{port}", "127.0.0.1", str(dest.port)))
    pync.send(payload)
    pync.wait_stdout("hello through socks\n")
    # microsocks closes both ends at the client's EOF: shut down only once
    # the banner is in, so it cannot be lost in flight.
    pync.close_stdin()
    assert pync.wait() == 0
    assert dest.join() == [payload]
    assert bytes(pync.out) == b"hello through socks\n"
    assert bytes(pync.err) == b""


def tap(port: int) -> tuple[Server, bytearray]:
    """A relay to the proxy on 127.0.0.1:port for one client; it records
    every byte the client sends (the handshake, then the session)."""
    sent = bytearray()

    def handler(conn: socket.socket) -> None:
        with socket.create_connection(("127.0.0.1", port), TIMEOUT) as upstream:
            _relay(conn, upstream, sent)

    return Server(handler), sent


@pytest.mark.parametrize("dns", [None, "local"])
def test_socks5_name_goes_to_the_proxy(microsocks, dns):
    """A name goes as a SOCKS5 domain (ATYP 3: the proxy resolves it), the
    very bytes nc sends; --proxy-dns local resolves it here (ATYP 1)."""
    port = microsocks
    dest = Dest(conns=2)
    nc_tap, nc_sent = tap(port)
    nc = subprocess.run([tool("nc"), "-x", f"127.0.0.1:{nc_tap.port}", "localhost",
                         str(dest.port)], input=REQUEST, capture_output=True, timeout=TIMEOUT)
    nc_tap.join()
    pync_tap, pync_sent = tap(port)
    args = ["-x", f"127.0.0.1:{pync_tap.port}", "localhost", str(dest.port)]
    if dns:
        args[:0] = ["--proxy-dns", dns]
    r = run_pync(*args, input=REQUEST)
    pync_tap.join()
    assert (nc.returncode, nc.stdout, nc.stderr) == (0, ANSWER, b"")
    assert (r.returncode, r.stdout, r.stderr) == (0, ANSWER, b"")
    assert dest.join() == [REQUEST, REQUEST]
    address = b"\x03\x09localhost" if dns is None else b"\x01\x7f\x00\x00\x01"
    greeting = b"\x05\x01\x00"  # SOCKS5, one method: no authentication
    connect = b"\x05\x01\x00" + address + dest.port.to_bytes(2, "big")
    assert bytes(pync_sent) == greeting + connect + REQUEST
    if dns is None:
        assert pync_sent == nc_sent


@pytest.mark.parametrize("how", ["proxy-auth", "env"])
def test_socks5_password_authentication(microsocks_auth, how):
    dest = Dest()
    args = ["-v", "-v", "-x", f"127.0.0.1:{microsocks_auth}", "127.0.0.1", str(dest.port)]
    env = None
    if how == "proxy-auth":
        args[:0] = ["--proxy-auth", "alice:secret"]
    else:
        args[:0] = ["-P", "alice"]
        env = {**os.environ, "PYNC_PROXY_PASSWORD": "secret"}
    r = run_pync(*args, input=REQUEST, env=env)
    assert (r.returncode, r.stdout) == (0, ANSWER), r.stderr
    assert r.stderr.startswith(f"Connection to 127.0.0.1 {dest.port} port [tcp/*] "
                               "succeeded!\n".encode())
    assert b"secret" not in r.stderr
    assert dest.join() == [REQUEST]


@pytest.mark.parametrize("verbose", [[], ["-v", "-v"]])
def test_socks5_wrong_password(microsocks_auth, verbose):
    password = "wr0ng-Pa55word"
    r = run_pync(*verbose, "--proxy-auth", f"alice:{password}",
                 "-x", f"127.0.0.1:{microsocks_auth}", "127.0.0.1", str(closed_port()))
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == b"pync: SOCKSv5 proxy authentication failed\n"
    assert password.encode() not in r.stderr


def test_socks5_proxy_wants_a_password_nc_agrees(microsocks_auth):
    r = nc_and_pync("-v", "-x", f"127.0.0.1:{microsocks_auth}", "127.0.0.1",
                    str(closed_port()))
    assert (r.returncode, r.stderr) == (1, b"pync: authentication method negotiation failed\n")


# -- nc and pync side by side ---------------------------------------------------

@pytest.mark.parametrize("name", list(PROXIES))
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_through_proxy_same_as_nc(request, name, host):
    """Same bytes out, same -v line, same exit status, through every proxy
    (-X 4 with a name: both resolve it locally and send the address)."""
    port = proxy_port(request, name)
    dest = Dest(conns=2)
    r = nc_and_pync("-v", "-X", PROXIES[name][1], "-x", f"127.0.0.1:{port}",
                    host, str(dest.port), input=REQUEST)
    assert (r.returncode, r.stdout) == (0, ANSWER)
    assert r.stderr == f"Connection to {host} {dest.port} port [tcp/*] succeeded!\n".encode()
    assert dest.join() == [REQUEST, REQUEST]


@pytest.mark.parametrize("name", list(PROXIES))
def test_refused_destination_same_as_nc(request, name):
    port = proxy_port(request, name)
    r = nc_and_pync("-v", "-X", PROXIES[name][1], "-x", f"127.0.0.1:{port}",
                    "127.0.0.1", str(closed_port()))
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == f"pync: {REFUSED[name]}\n".encode()


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_proxy_unreachable_same_as_nc(verbose):
    proxy, dest = closed_port(), closed_port()
    r = nc_and_pync(*verbose, "-x", f"127.0.0.1:{proxy}", "127.0.0.1", str(dest))
    assert (r.returncode, r.stdout) == (1, b"")
    expected = (f"pync: connect to 127.0.0.1 port {proxy} (tcp) failed: "
                "Connection refused\n").encode() if verbose else b""
    assert r.stderr == expected


# -- HTTP CONNECT with Basic authentication: tinyproxy ------------------------------

def test_http_connect_basic_auth(tinyproxy_auth):
    dest = Dest()
    r = run_pync("-X", "connect", "--proxy-auth", "alice:secret",
                 "-x", f"127.0.0.1:{tinyproxy_auth}", "127.0.0.1", str(dest.port),
                 input=REQUEST)
    assert (r.returncode, r.stdout, r.stderr) == (0, ANSWER, b"")
    assert dest.join() == [REQUEST]


def test_http_connect_user_without_password_needs_no_prompt(tinyproxy):
    """-P with a proxy that wants no password: as nc, nothing is asked (there is
    no terminal here, so a prompt would fail)."""
    dest = Dest()
    r = run_pync("-X", "connect", "-P", "alice", "-x", f"127.0.0.1:{tinyproxy}",
                 "127.0.0.1", str(dest.port), input=REQUEST, start_new_session=True)
    assert (r.returncode, r.stdout, r.stderr) == (0, ANSWER, b"")
    assert dest.join() == [REQUEST]


def test_http_connect_without_credentials_same_as_nc(tinyproxy_auth):
    r = nc_and_pync("-X", "connect", "-x", f"127.0.0.1:{tinyproxy_auth}",
                    "127.0.0.1", str(closed_port()))
    assert r.returncode == 1
    assert r.stderr == b'pync: Proxy error: "HTTP/1.0 407 Proxy Authentication Required"\n'


def test_http_connect_wrong_password(tinyproxy_auth):
    """tinyproxy answers a wrong password with 401, not 407: nc's plain proxy error."""
    password = "wr0ng-Pa55word"
    r = run_pync("-v", "-v", "-X", "connect", "--proxy-auth", f"alice:{password}",
                 "-x", f"127.0.0.1:{tinyproxy_auth}", "127.0.0.1", str(closed_port()))
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == b'pync: Proxy error: "HTTP/1.0 401 Unauthorized"\n'
    assert password.encode() not in r.stderr


# -- SOCKS4 and SOCKS4a against an in-test proxy ---------------------------------

def _read_exactly(conn: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, f"EOF after {bytes(data)!r}"
        data += chunk
    return bytes(data)


def _read_to_nul(conn: socket.socket) -> bytes:
    data = bytearray()
    while not data.endswith(b"\0"):
        data += _read_exactly(conn, 1)
    return bytes(data[:-1])


def _relay(a: socket.socket, b: socket.socket, log: Optional[bytearray] = None) -> None:
    """Copy both ways until both sides have ended; half-closes passed on.
    What a sends goes into log too."""
    sel = selectors.DefaultSelector()
    peer = {a: b, b: a}
    for s in (a, b):
        s.setblocking(True)
        sel.register(s, selectors.EVENT_READ)
    open_ends = 2
    while open_ends:
        events = sel.select(TIMEOUT)
        assert events, "relay idle too long"
        for key, _ in events:
            src = key.fileobj
            data = src.recv(65536)
            if data:
                peer[src].sendall(data)
                if log is not None and src is a:
                    log += data
            else:
                sel.unregister(src)
                peer[src].shutdown(socket.SHUT_WR)
                open_ends -= 1
    sel.close()


TUNNEL_FIRST = b"tunnel bytes sent with the SOCKS reply\n"


@pytest.mark.parametrize("dns", [None, "local", "remote"])
def test_socks4_and_socks4a_request_and_first_bytes(dns):
    """-X 4 to a name: pync resolves it and sends SOCKS4 (as nc does, and
    with --proxy-dns local); with --proxy-dns remote it sends SOCKS4a
    (0.0.0.x, then the name).  Bytes the
    proxy sends with its reply, in the same segment, are the session's first."""
    dest = Dest()

    def proxy(conn: socket.socket) -> None:
        head = _read_exactly(conn, 8)
        assert head[:2] == b"\x04\x01" and int.from_bytes(head[2:4], "big") == dest.port
        assert _read_to_nul(conn) == b""  # no user id
        if dns == "remote":
            assert head[4:7] == b"\0\0\0" and head[7] != 0, head
            assert _read_to_nul(conn) == b"localhost"
        else:
            assert head[4:8] == socket.inet_aton("127.0.0.1"), head
        with socket.create_connection(("127.0.0.1", dest.port), TIMEOUT) as upstream:
            conn.sendall(b"\x00\x5a" + head[2:8] + TUNNEL_FIRST)  # one send
            _relay(conn, upstream)

    server = Server(proxy)
    dns_option = ["--proxy-dns", dns] if dns else []
    r = run_pync("-v", "-X", "4", *dns_option, "-x", f"127.0.0.1:{server.port}",
                 "localhost", str(dest.port), input=REQUEST)
    server.join()
    assert (r.returncode, r.stdout) == (0, TUNNEL_FIRST + ANSWER), r.stderr
    assert r.stderr == f"Connection to localhost {dest.port} port [tcp/*] succeeded!\n".encode()
    assert dest.join() == [REQUEST]


# -- an IPv6 proxy address -----------------------------------------------------------

def _have_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _have_ipv6_loopback(), reason="no IPv6 on loopback")
def test_proxy_on_ipv6_loopback():
    port = free_port("::1")
    peer = start_peer([tool("microsocks"), "-i", "::1", "-p", str(port)], port, "::1")
    try:
        dest = Dest(conns=2)
        r = nc_and_pync("-x", f"[::1]:{port}", "127.0.0.1", str(dest.port), input=REQUEST)
        assert (r.returncode, r.stdout, r.stderr) == (0, ANSWER, b"")
        assert dest.join() == [REQUEST, REQUEST]
    finally:
        stop(peer)


# -- the password prompt ---------------------------------------------------------

PROMPT = b"Proxy password for alice@127.0.0.1: "


def spawn(argv: list[str]):
    pexpect = pytest.importorskip("pexpect")
    return pexpect, pexpect.spawn(argv[0], argv[1:], timeout=TIMEOUT)


def test_password_prompt_on_terminal(tinyproxy_auth):
    dest = Dest(want=len(b"ping\n"), banner=b"hello from the destination\n", reply=b"")
    pexpect, child = spawn([*PYNC, "-v", "-X", "connect", "-P", "alice",
                            "-x", f"127.0.0.1:{tinyproxy_auth}", "127.0.0.1", str(dest.port)])
    try:
        child.expect_exact(PROMPT)
        assert child.before == b""
        assert child.waitnoecho(TIMEOUT), "password prompt echoes"
        child.sendline("secret")
        child.expect_exact(b"succeeded!")
        child.expect_exact(b"hello from the destination\r\n")
        child.sendline("ping")  # the destination closes once it has it
        child.sendeof()  # with stdin open on a terminal, nc (and pync) would stay
        child.expect(pexpect.EOF)
        transcript = child.before
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert b"secret" not in transcript
    assert dest.join() == [b"ping\n"]


def _refused_three_times(argv: list[str]) -> tuple[bytes, Optional[int]]:
    """Answer every prompt with a wrong password; the whole transcript."""
    pexpect, child = spawn(argv)
    transcript = b""
    try:
        for _ in range(4):
            if child.expect_exact([PROMPT, pexpect.EOF]) == 1:
                break
            transcript += child.before + PROMPT
            assert child.waitnoecho(TIMEOUT)
            child.sendline("wrong")
        transcript += child.before
    finally:
        child.close(force=True)
    return transcript, child.exitstatus


def test_password_asked_again_after_407_same_as_nc(ncat_http_auth):
    """An HTTP proxy answering 407 to a typed password: nc says so without
    its prefix, asks again, and gives up after three refusals."""
    args = ["-X", "connect", "-P", "alice", "-x", f"127.0.0.1:{ncat_http_auth}",
            "127.0.0.1", str(closed_port())]
    nc = _refused_three_times([tool("nc"), *args])
    ours = _refused_three_times([*PYNC, *args])
    assert ours == (as_pync(nc[0]), nc[1])
    assert ours == ((PROMPT + b"\r\nProxy authentication failed\r\n") * 3
                    + b"pync: Too many authentication failures\r\n", 1)


def test_no_terminal_for_the_password_same_as_nc(tinyproxy_auth):
    """No controlling terminal (a new session) and stdin a pipe: no prompt."""
    env = {k: v for k, v in os.environ.items() if k != "PYNC_PROXY_PASSWORD"}
    r = nc_and_pync("-X", "connect", "-P", "alice", "-x", f"127.0.0.1:{tinyproxy_auth}",
                    "127.0.0.1", str(closed_port()), input=b"data", env=env,
                    start_new_session=True)
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == b"pync: Unable to read proxy passphrase\n"
