"""-L: the forwarder, with real clients and servers on loopback.

Every client is joined to a new connection to the destination, many at
once; half-close goes through, a reset is passed on, nothing received is
lost, a refused destination closes the client (and -v says why), UDP is
forwarded per client address, memory stays bounded per pair.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import socket
import struct
import subprocess
import threading

import pytest
from pynctest import (
    TIMEOUT,
    Certs,
    Proc,
    Server,
    connect,
    filtered_port,
    linux_only,
    pync_cmd,
    recv_all,
    run_in_threads,
    vm_rss_kib,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("pync_backend")
MiB = 1024 * 1024


def start_forwarder(*args: str, target: tuple = ("127.0.0.1", 9),
                    verbose: str = "-v") -> tuple[Proc, int]:
    """``pync -v -n -L 127.0.0.1:0 ARGS host port`` (or a socket path, with
    -U); its port, from -v ("Bound on" with -u)."""
    proc = Proc(pync_cmd(verbose, "-n", "-L", "127.0.0.1:0", *args, *map(str, target)),
                stdin=subprocess.DEVNULL)
    m = proc.wait_stderr(rf"{'Bound' if '-u' in args else 'Listening'} on \S+ (\d+)\n")
    return proc, int(m.group(1))


class EchoServer:
    """Many clients at once: what each sends comes back (a selectors loop)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.setblocking(False)
        self.sel.register(self.sock, selectors.EVENT_READ)
        while not self.stopped.is_set():
            for key, _ in self.sel.select(0.05):
                if key.fileobj is self.sock:
                    try:
                        conn, _ = self.sock.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(True)
                    conn.settimeout(TIMEOUT)
                    self.sel.register(conn, selectors.EVENT_READ)
                    continue
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if data:
                    conn.sendall(data)
                else:
                    self.sel.unregister(conn)
                    conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(TIMEOUT)
        self.sock.close()


def test_many_clients_at_once_each_get_their_own_answers():
    echo = EchoServer()
    fwd, port = start_forwarder("--max-conns", "300", target=("127.0.0.1", echo.port))
    try:
        def client(i: int) -> bytes:
            with connect(port) as s:
                msg = b"client %d " % i * 50
                s.sendall(msg)
                s.shutdown(socket.SHUT_WR)
                return recv_all(s) == msg
        assert all(run_in_threads([lambda i=i: client(i) for i in range(200)], width=50))
    finally:
        fwd.stop()
        echo.close()
    assert bytes(fwd.err).count(b"Connection received on") == 200


def test_half_close_goes_through_and_the_answer_comes_back():
    def sorter(conn: socket.socket) -> None:
        conn.sendall(b"".join(sorted(recv_all(conn).splitlines(keepends=True))))

    srv = Server(sorter)
    fwd, port = start_forwarder(target=("127.0.0.1", srv.port))
    try:
        r = subprocess.run(pync_cmd("-N", "127.0.0.1", str(port)), input=b"pear\napple\nfig\n",
                           capture_output=True, timeout=TIMEOUT)
        assert (r.returncode, r.stdout) == (0, b"apple\nfig\npear\n"), r.stderr
        srv.join()
        fwd.wait_stderr(r"Connection from \S+ \d+ closed\n")
    finally:
        fwd.stop()


@pytest.mark.parametrize("direction", ["to the destination", "from the destination"])
def test_32_mib_each_way_loses_nothing(direction):
    data = os.urandom(32 * MiB)
    got: list[bytes] = []

    def server(conn: socket.socket) -> None:
        if direction == "to the destination":
            got.append(recv_all(conn))
        else:
            conn.sendall(data)

    srv = Server(server)
    fwd, port = start_forwarder(target=("127.0.0.1", srv.port))
    try:
        with connect(port) as s:
            if direction == "to the destination":
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                assert recv_all(s) == b""
            else:
                s.shutdown(socket.SHUT_WR)
                got.append(recv_all(s))
        srv.join()
    finally:
        fwd.stop()
    assert hashlib.sha256(got[0]).digest() == hashlib.sha256(data).digest()


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def test_a_reset_by_the_destination_resets_the_client_after_its_bytes(pync_backend):
    def resetter(conn: socket.socket) -> None:
        conn.sendall(b"last words\n")
        conn.recv(100)  # the client's go-ahead: its reset comes after the bytes
        _reset(conn)

    srv = Server(resetter)
    fwd, port = start_forwarder(target=("127.0.0.1", srv.port))
    try:
        with connect(port) as s:
            got = b""
            while not got.endswith(b"\n"):
                got += s.recv(100)
            assert got == b"last words\n"
            s.sendall(b"go\n")
            if resets_pass(pync_backend):
                with pytest.raises(ConnectionResetError):
                    while s.recv(100):
                        pass
            else:
                assert recv_all(s) == b""
        fwd.wait_stderr(r"Connection from \S+ \d+ reset\n")
    finally:
        fwd.stop()


@linux_only  # the test's own look at the destination's send queue (SIOCOUTQ)
def test_a_reset_comes_only_after_a_slow_client_has_read_everything(pync_backend):
    """The destination sends 256 KiB and resets while the client is not
    reading: much of it is then in pync's buffers and its socket's send
    queue, which a reset at once would throw away.  The client gets all of
    it, then the reset (where the platform cannot tell what is still
    queued, an end of stream instead)."""
    data = os.urandom(256 * 1024)
    reset = threading.Event()

    def resetter(conn: socket.socket) -> None:
        conn.sendall(data)
        wait_until(lambda: _unacked(conn) == 0, what="pync's kernel has every byte")
        _reset(conn)
        reset.set()

    srv = Server(resetter)
    fwd, port = start_forwarder(target=("127.0.0.1", srv.port))
    got, how = bytearray(), "end of stream"
    try:
        with connect(port) as s:
            assert reset.wait(TIMEOUT)
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            except ConnectionResetError:
                how = "reset"
        srv.join()
        fwd.wait_stderr(r"Connection from \S+ \d+ reset\n")
    finally:
        fwd.stop()
    assert len(got) == len(data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert how == ("reset" if resets_pass(pync_backend) else "end of stream")


def resets_pass(pync_backend: str) -> bool:
    """Is a reset passed on as a reset?  Where the platform can say what a
    socket has still to send (Linux, macOS); elsewhere (Windows, and the
    portable backend on Linux, which plays Windows) the partner is closed."""
    return pync_backend == "native" and os.name != "nt"


def _unacked(conn: socket.socket) -> int:
    """Bytes conn has sent that its peer has not acknowledged (Linux: SIOCOUTQ)."""
    import fcntl

    return struct.unpack("i", fcntl.ioctl(conn.fileno(), 0x5411, b"\0" * 4))[0]


def test_a_reset_by_the_client_resets_the_destination(pync_backend):
    seen: list[str] = []

    def server(conn: socket.socket) -> None:
        conn.sendall(b"hello\n")
        try:
            while conn.recv(100):
                pass
            seen.append("eof")
        except ConnectionResetError:
            seen.append("reset")

    srv = Server(server)
    fwd, port = start_forwarder(target=("127.0.0.1", srv.port))
    try:
        s = connect(port)
        assert s.recv(100) == b"hello\n"
        _reset(s)
        srv.join()
    finally:
        fwd.stop()
    assert seen == ["reset" if resets_pass(pync_backend) else "eof"]


def test_a_refusing_destination_closes_the_client_and_says_why():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    fwd, port = start_forwarder(target=("127.0.0.1", dead_port))
    try:
        with connect(port) as s:
            assert recv_all(s) == b""
        fwd.wait_stderr(rf"pync: connect to 127\.0\.0\.1 port {dead_port} \(tcp\) failed: "
                        r"Connection refused\n")
    finally:
        fwd.stop()


def test_a_silent_destination_bounds_the_connect_by_w():
    keep: list[socket.socket] = []
    silent = filtered_port(keep)
    fwd, port = start_forwarder("-w", "1", target=("127.0.0.1", silent))
    try:
        with connect(port) as s:
            assert recv_all(s) == b""  # closed once the connect timed out
        fwd.wait_stderr(rf"pync: connect to 127\.0\.0\.1 port {silent} \(tcp\) timed out: "
                        r"Operation now in progress\n")
    finally:
        fwd.stop()
        for k in keep:
            k.close()


def test_idle_pairs_end_after_w():
    srv = Server(lambda conn: recv_all(conn))
    fwd, port = start_forwarder("-w", "1", target=("127.0.0.1", srv.port))
    try:
        with connect(port) as s:
            assert recv_all(s) == b""  # nothing moved for 1 s: both ends closed
        fwd.wait_stderr(r"Connection from \S+ \d+ timed out\n")
        srv.join()
    finally:
        fwd.stop()


def test_access_lists_and_the_connection_limit_apply():
    srv = Server(lambda conn: conn.sendall(b"hi\n"))
    fwd, port = start_forwarder("--deny", "127.0.0.1", target=("127.0.0.1", srv.port))
    try:
        with connect(port) as s:
            assert recv_all(s) == b""
        fwd.wait_stderr(r"pync: new connection denied: not allowed \(127\.0\.0\.1\)\n")
    finally:
        fwd.stop()
        srv.sock.close()


def test_vv_says_the_bytes_each_way():
    srv = Server(lambda conn: conn.sendall(recv_all(conn) * 2))
    proc, port = start_forwarder(target=("127.0.0.1", srv.port), verbose="-vv")
    try:
        with connect(port) as s:
            s.sendall(b"12345")
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"1234512345"
        proc.wait_stderr(r"pync: \S+ \d+: 5 bytes forwarded, 10 bytes returned in [\d.]+ "
                         r"seconds\n")
        srv.join()
    finally:
        proc.stop()


def test_a_slow_destination_stops_the_client_being_read():
    """The destination never reads: the forwarder's memory stays bounded
    (it stops reading the client), and it ends at the client's reset."""
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(1)
    fwd, port = start_forwarder(target=stalled.getsockname())
    try:
        s = connect(port)
        conn, _ = stalled.accept()
        s.setblocking(False)
        chunk = b"x" * MiB
        sent = 0
        while sent < 64 * MiB:  # until the whole path is full
            try:
                sent += s.send(chunk)
            except BlockingIOError:
                break
        wait_until(lambda: vm_rss_kib(fwd.p.pid) > 0, what="rss")
        assert vm_rss_kib(fwd.p.pid) < 64 * 1024
        assert sent < 64 * MiB
        _reset(s)
        conn.close()
    finally:
        stalled.close()
        fwd.stop()


def test_udp_datagrams_find_their_way_back_to_each_client():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(TIMEOUT)
    served = threading.Event()

    def upper() -> None:
        while not served.is_set():
            try:
                data, addr = server.recvfrom(65536)
            except OSError:
                return
            server.sendto(data.upper(), addr)

    threading.Thread(target=upper, daemon=True).start()
    fwd, port = start_forwarder("-u", "-w", "1", target=server.getsockname())
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        for c in clients:
            c.settimeout(TIMEOUT)
        for _ in range(3):
            for i, c in enumerate(clients):
                c.sendto(b"hello from %d" % i, ("127.0.0.1", port))
            for i, c in enumerate(clients):
                assert c.recvfrom(100)[0] == b"HELLO FROM %d" % i
        fwd.wait_stderr(r"(?:Connection received on [^\n]*\n.*){2}")
        # -w 1 of silence: both are forgotten; the next datagram starts anew
        fwd.wait_stderr(r"(?:Connection from [^\n]* timed out\n.*){2}")
        clients[0].sendto(b"again", ("127.0.0.1", port))
        assert clients[0].recvfrom(100)[0] == b"AGAIN"
    finally:
        served.set()
        for c in clients:
            c.close()
        server.close()
        fwd.stop()
    assert bytes(fwd.err).count(b"Connection received on") == 3  # per client, and anew


def test_a_tls_client_sending_garbage_is_dropped_and_the_rest_go_on(tmp_path):
    """A record that does not decrypt (after a good handshake) ends that
    client's pair, not the forwarder: the next client is served."""
    import ssl

    certs = Certs(str(tmp_path))
    echo = EchoServer()
    fwd, port = start_forwarder(*certs.server, target=("127.0.0.1", echo.port))
    ctx = ssl.create_default_context(cafile=certs.ca)
    try:
        for bad in (True, False):
            with ctx.wrap_socket(connect(port), server_hostname="localhost") as s:
                s.sendall(b"ping")
                assert s.recv(4) == b"ping"
                if not bad:
                    continue
                # an application-data record whose MAC cannot be right
                os.write(s.fileno(), b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
                with pytest.raises((ssl.SSLError, OSError)):
                    while s.recv(100):
                        pass
        assert fwd.p.poll() is None
        fwd.wait_stderr(r"Connection from \S+ \d+ reset\n")
    finally:
        fwd.stop()
        echo.close()


@linux_only  # 127.0.0.2 is a loopback address on Linux only
def test_udp_forwarding_sends_from_the_s_address():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(TIMEOUT)
    fwd, port = start_forwarder("-u", "-s", "127.0.0.2", target=server.getsockname())
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.sendto(b"from where?", ("127.0.0.1", port))
            data, addr = server.recvfrom(100)
            assert (data, addr[0]) == (b"from where?", "127.0.0.2")
    finally:
        server.close()
        fwd.stop()


@pytest.mark.native_only
def test_listening_on_a_unix_socket(sock_dir):
    srv = Server(lambda conn: conn.sendall(recv_all(conn)[::-1]))
    path = os.path.join(sock_dir, "in.sock")
    proc = Proc(pync_cmd("-v", "-n", "-L", path, "127.0.0.1", str(srv.port)),
                stdin=subprocess.DEVNULL)
    proc.wait_stderr(rf"Listening on {path}\n")
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(TIMEOUT)
            s.connect(path)
            s.sendall(b"abc")
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"cba"
        srv.join()
    finally:
        proc.stop()
    assert not os.path.exists(path)  # its socket file goes with it


@pytest.mark.native_only
def test_to_a_unix_socket(sock_dir):
    path = os.path.join(sock_dir, "app.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(recv_all(conn).upper())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    proc, port = start_forwarder("-U", target=(path,))
    try:
        with connect(port) as s:
            s.sendall(b"over a socket file\n")
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"OVER A SOCKET FILE\n"
        t.join(TIMEOUT)
    finally:
        srv.close()
        proc.stop()


@pytest.mark.parametrize("argv, message", [
    (["-L", "6000", "-l", "h", "1"], "cannot use -L and -l"),
    (["-L", "6000", "-z", "h", "1"], "cannot use -L and -z"),
    (["-L", "6000", "-e", "cat", "h", "1"], "cannot use -e/-c with -L"),
    (["-L", "6000", "-C", "h", "1"], "cannot use -C with -L"),
    (["-L", "6000", "h", "1", "2"], "-L forwards to one destination port"),
    (["-L", "6000", "h", "1-5"], "-L forwards to one destination port"),
    (["-L", "abc", "h", "1"], "port number invalid: abc"),
    (["-L", "1.2.3.4:99999", "h", "1"], "port number too large: 99999"),
    (["-L", "::1:80", "h", "1"], "invalid -L address (an IPv6 address goes in brackets): ::1:80"),
    (["-L", "6000", "-u", "--ssl", "h", "1"], "cannot use --ssl with -u"),
    (["-L", "6000", "-p", "5000", "h", "1"],
     "cannot use -p with -L: every client needs a source port of its own"),
    (["-L", "6000", "-N", "h", "1"], "cannot use -N with -L"),
    (["-L", "6000", "-q", "0", "h", "1"], "cannot use -q with -L"),
    (["-L", "6000", "-d", "h", "1"], "cannot use -d with -L"),
    (["-L", "6000", "-r", "h", "1"], "cannot use -r with -L"),
    (["-L", "6000", "-X", "5", "h", "1"],
     "-X, -P and --proxy-auth go with -x with -L (a proxy server is -l -X)"),
])
def test_bad_forwarding_command_lines(argv, message):
    r = subprocess.run(pync_cmd(*argv), capture_output=True, timeout=TIMEOUT)
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == f"pync: {message}\n".encode()
