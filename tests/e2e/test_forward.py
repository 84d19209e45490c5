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
    Proc,
    Server,
    connect,
    filtered_port,
    pync_cmd,
    recv_all,
    run_in_threads,
    vm_rss_kib,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("pync_backend")
MiB = 1024 * 1024


def start_forwarder(*args: str, target: tuple[str, int] = ("127.0.0.1", 9)) -> tuple[Proc, int]:
    """``pync -v -n -L 127.0.0.1:0 ARGS host port``; its port, from -v."""
    proc = Proc(pync_cmd("-v", "-n", "-L", "127.0.0.1:0", *args, target[0], str(target[1])),
                stdin=subprocess.DEVNULL)
    m = proc.wait_stderr(r"Listening on \S+ (\d+)\n")
    return proc, int(m.group(1))


def stop(proc: Proc) -> None:
    """SIGTERM ends it: 143, cleanly (Windows has no SIGTERM: terminate() is 1 there)."""
    proc.p.terminate()
    assert proc.wait() == (143 if os.name != "nt" else 1), bytes(proc.err)
    assert b"Traceback" not in bytes(proc.err)


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
        stop(fwd)
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
        stop(fwd)


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
        stop(fwd)
    assert hashlib.sha256(got[0]).digest() == hashlib.sha256(data).digest()


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def test_a_reset_by_the_destination_resets_the_client_after_its_bytes():
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
            with pytest.raises(ConnectionResetError):
                while s.recv(100):
                    pass
        fwd.wait_stderr(r"Connection from \S+ \d+ reset\n")
    finally:
        stop(fwd)


def test_a_reset_by_the_client_resets_the_destination():
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
        stop(fwd)
    assert seen == ["reset"]


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
        stop(fwd)


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
        stop(fwd)
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
        stop(fwd)


def test_access_lists_and_the_connection_limit_apply():
    srv = Server(lambda conn: conn.sendall(b"hi\n"))
    fwd, port = start_forwarder("--deny", "127.0.0.1", target=("127.0.0.1", srv.port))
    try:
        with connect(port) as s:
            assert recv_all(s) == b""
        fwd.wait_stderr(r"pync: new connection denied: not allowed \(127\.0\.0\.1\)\n")
    finally:
        stop(fwd)
        srv.sock.close()


def test_vv_says_the_bytes_each_way():
    srv = Server(lambda conn: conn.sendall(recv_all(conn) * 2))
    proc = Proc(pync_cmd("-vv", "-n", "-L", "127.0.0.1:0", "127.0.0.1", str(srv.port)),
                stdin=subprocess.DEVNULL)
    port = int(proc.wait_stderr(r"Listening on \S+ (\d+)\n").group(1))
    try:
        with connect(port) as s:
            s.sendall(b"12345")
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"1234512345"
        proc.wait_stderr(r"pync: \S+ \d+: 5 bytes forwarded, 10 bytes returned in [\d.]+ "
                         r"seconds\n")
        srv.join()
    finally:
        stop(proc)


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
        stop(fwd)


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
    fwd = Proc(pync_cmd("-v", "-n", "-u", "-w", "1", "-L", "127.0.0.1:0", "127.0.0.1",
                        str(server.getsockname()[1])), stdin=subprocess.DEVNULL)
    port = int(fwd.wait_stderr(r"Bound on \S+ (\d+)\n").group(1))
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
        stop(fwd)
    assert bytes(fwd.err).count(b"Connection received on") == 3  # per client, and anew


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
        stop(proc)
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
    proc = Proc(pync_cmd("-v", "-n", "-U", "-L", "127.0.0.1:0", path), stdin=subprocess.DEVNULL)
    port = int(proc.wait_stderr(r"Listening on \S+ (\d+)\n").group(1))
    try:
        with connect(port) as s:
            s.sendall(b"over a socket file\n")
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"OVER A SOCKET FILE\n"
        t.join(TIMEOUT)
    finally:
        srv.close()
        stop(proc)


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
])
def test_bad_forwarding_command_lines(argv, message):
    r = subprocess.run(pync_cmd(*argv), capture_output=True, timeout=TIMEOUT)
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == f"pync: {message}\n".encode()
