"""Real pync processes on loopback: transfers, half-close, end-of-stream rules."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
from pynctest import (
    TIMEOUT,
    Proc,
    Server,
    connect,
    filtered_port,
    posix_only,
    pync_cmd,
    recv_all,
    require_tool,
    run_pync,
    start_listener,
)

MiB = 1024 * 1024


# Every session here runs three times: on the zero-copy (splice) path, on
# the copying path, and on the portable backend (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("relay_path")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    data = os.urandom(32 * MiB)
    path = tmp_path_factory.mktemp("blob") / "blob.bin"
    path.write_bytes(data)
    return path, data


def _file_to_listener(path, sink, verbose: str = "-v") -> str:
    """``pync -N host port < path`` into ``pync -l > sink``; both must end
    with status 0.  Returns the listener's stderr after its first line."""
    with open(path, "rb") as src:
        lp = subprocess.Popen(pync_cmd("-l", verbose, "-n", "127.0.0.1", "0"),
                              stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.PIPE)
        port = int(lp.stderr.readline().split()[-1])
        client = subprocess.run(pync_cmd("-N", "127.0.0.1", str(port)), stdin=src,
                                capture_output=True, timeout=TIMEOUT * 3)
        assert lp.wait(TIMEOUT) == 0
    assert client.returncode == 0, client.stderr
    return lp.stderr.read().decode()


def test_file_client_to_listener(blob, tmp_path):
    path, data = blob
    out = tmp_path / "received"
    with open(out, "wb") as sink:
        _file_to_listener(path, sink)
    assert sha(out.read_bytes()) == sha(data)


def test_file_stdin_sent_from_its_current_offset(blob):
    """A file already partly read (``(head -c 1000 >/dev/null; pync ...) < f``):
    only the rest goes, on the sendfile path as on the others."""
    path, data = blob
    got = []
    srv = Server(lambda conn: got.append(recv_all(conn)) or None)
    with open(path, "rb") as src:
        src.seek(1000)
        r = subprocess.run(pync_cmd("-N", "127.0.0.1", str(srv.port)), stdin=src,
                           capture_output=True, timeout=TIMEOUT * 3)
    srv.join()
    assert r.returncode == 0, r.stderr
    assert sha(got[0]) == sha(data[1000:])


@pytest.mark.parametrize("mode", ["wb", "ab"])
def test_listener_into_dev_null_takes_every_byte(blob, mode):
    """``pync -l > /dev/null``, the throughput test: on the zero-copy path
    the bytes go socket -> pipe -> /dev/null; every one is still read (the
    -vv count), the session ends at the peer's EOF, status 0.  Also with
    ``>>/dev/null``, which splice() refuses (the copying path takes it)."""
    path, data = blob
    with open(os.devnull, mode) as null:
        err = _file_to_listener(path, null, "-vv")
    assert f"0 bytes sent, {len(data)} bytes received" in err


def test_bytes_after_a_bulk_flow_pauses_are_not_held_back():
    """After a bulk flow pync wakes only per large batch (SO_RCVLOWAT); a
    short message after the flow pauses, the connection still open, must
    still reach stdout, and a reply must go back: a dialogue after bulk."""
    proc, port = start_listener()
    s = connect(port)
    try:
        bulk = b"a" * (4 * MiB)
        s.sendall(bulk + b"END\n")
        proc.wait_stdout(r"END\n\Z")
        for i in range(3):
            s.sendall(b"ping %d\n" % i)
            proc.wait_stdout(rf"ping {i}\n\Z")
            proc.send(b"pong %d\n" % i)
            got = b""
            while not got.endswith(b"\n"):
                got += s.recv(100)
            assert got == b"pong %d\n" % i
        assert bytes(proc.out) == bulk + b"END\n" + b"".join(b"ping %d\n" % i for i in range(3))
    finally:
        s.close()
    assert proc.wait() == 0


@pytest.mark.native_only
def test_no_pacing_between_two_ends_on_this_host():
    """pync's end of a loopback connection does not keep a pacing
    congestion control (BBR, this machine's default): ss(8) shows it."""
    ss = require_tool("ss")
    proc, port = start_listener()
    try:
        with connect(port):
            proc.wait_stderr(r"Connection received")
            out = subprocess.run([ss, "-tin", "state", "established", f"( sport = :{port} )"],
                                 capture_output=True, text=True, timeout=TIMEOUT).stdout
            lines = out.splitlines()
            assert len(lines) >= 3, out  # header, the socket, its details
            assert not lines[2].split()[0].startswith("bbr"), out
    finally:
        proc.close_stdin()
        proc.wait()


def test_file_listener_to_client(blob, tmp_path):
    path, data = blob
    with open(path, "rb") as src:
        lp = subprocess.Popen(pync_cmd("-l", "-N", "-v", "-n", "127.0.0.1", "0"),
                              stdin=src, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port = int(lp.stderr.readline().split()[-1])
        client = subprocess.run(pync_cmd("127.0.0.1", str(port)), stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=TIMEOUT * 3)
        assert lp.wait(TIMEOUT) == 0
    assert client.returncode == 0, client.stderr
    assert sha(client.stdout) == sha(data)


def test_32_mib_each_way_at_once(blob, tmp_path):
    """Both directions full at the same time, through pipes on both ends:
    the listener sends one 32 MiB stream (then -N), the client another
    (and stays open until the listener's has all come); each side gets
    the other's bytes exactly."""
    _, data = blob
    other = bytes(reversed(data[: 8 * MiB])) * 4
    got_l, got_c = tmp_path / "by-listener", tmp_path / "by-client"
    with open(got_l, "wb") as out_l, open(got_c, "wb") as out_c:
        lp = subprocess.Popen(pync_cmd("-l", "-N", "-v", "-n", "127.0.0.1", "0"),
                              stdin=subprocess.PIPE, stdout=out_l, stderr=subprocess.PIPE)
        port = int(lp.stderr.readline().split()[-1])
        cp = subprocess.Popen(pync_cmd("127.0.0.1", str(port)), stdin=subprocess.PIPE,
                              stdout=out_c, stderr=subprocess.PIPE)
        feeders = [threading.Thread(target=_feed, args=(p, chunk))
                   for p, chunk in ((lp, data), (cp, other))]
        for t in feeders:
            t.start()
        for t in feeders:
            t.join(TIMEOUT * 3)
        assert cp.wait(TIMEOUT * 3) == 0, cp.stderr.read()
        assert lp.wait(TIMEOUT) == 0, lp.stderr.read()
    assert sha(got_c.read_bytes()) == sha(data)
    assert sha(got_l.read_bytes()) == sha(other)


def _feed(proc: subprocess.Popen, data: bytes) -> None:
    """Write data into proc's stdin and close it (a pipe, as `cat f | pync`)."""
    try:
        proc.stdin.write(data)
    finally:
        proc.stdin.close()


def test_listener_sends_what_waits_on_stdin_to_a_client_that_closes_at_once():
    """``echo hello | pync -l`` and ``pync -N host port </dev/null``: the
    client half-closes at once, but what was waiting on the listener's stdin
    when the connection came still goes (on the portable path it comes
    through a bridge thread just started)."""
    for _ in range(5):
        listener, port = start_listener()
        listener.send(b"hello\n")
        with connect(port) as s:
            s.shutdown(socket.SHUT_WR)  # the FIN comes with the connection
            got = recv_all(s)
        listener.close_stdin()
        assert listener.wait() == 0
        assert got == b"hello\n"


def test_half_close_sort():
    def sorter(conn):
        conn.sendall(b"".join(sorted(recv_all(conn).splitlines(keepends=True))))

    srv = Server(sorter)
    r = run_pync("-N", "127.0.0.1", str(srv.port), input=b"b\na\n")
    srv.join()
    assert (r.returncode, r.stdout, r.stderr) == (0, b"a\nb\n", b"")


def test_without_N_the_write_side_stays_open():
    """nc without -N never shuts down: the server sees no EOF, closes itself."""
    seen = {}

    def server(conn):
        conn.settimeout(1.0)
        seen["data"] = conn.recv(10)
        try:
            seen["eof"] = conn.recv(10) == b""
        except socket.timeout:
            seen["eof"] = False
        conn.sendall(b"bye\n")

    srv = Server(server)
    r = run_pync("127.0.0.1", str(srv.port), input=b"x")
    srv.join()
    assert seen == {"data": b"x", "eof": False}
    assert (r.returncode, r.stdout) == (0, b"bye\n")


@posix_only
def test_keep_open_three_clients_in_a_row():
    listener, port = start_listener("-k", stdin=subprocess.DEVNULL)
    for i in range(3):
        with connect(port) as c:
            c.sendall(b"client %d\n" % i)
            c.shutdown(socket.SHUT_WR)
            assert recv_all(c) == b""
        listener.wait_stdout(rf"client {i}\n$")
    assert listener.running()
    listener.p.send_signal(signal.SIGTERM)
    assert listener.wait() == 128 + signal.SIGTERM
    assert bytes(listener.out) == b"client 0\nclient 1\nclient 2\n"
    assert b"Traceback" not in listener.err


def test_ipv6_loopback():
    listener, port = start_listener(host="::1", stdin=subprocess.DEVNULL)
    r = run_pync("-N", "::1", str(port), input=b"over six\n")
    assert listener.wait() == 0
    assert r.returncode == 0
    assert bytes(listener.out) == b"over six\n"
    assert b"Connection received on ::1 " in listener.err


@pytest.mark.native_only
def test_unix_socket_roundtrip_and_cleanup(sock_dir):
    path = os.path.join(sock_dir, "s")
    listener = Proc(pync_cmd("-lU", "-v", path))
    listener.wait_stderr(r"Listening on " + path)
    listener.send(b"from listener\n")
    listener.close_stdin()
    r = run_pync("-N", "-U", path, input=b"from client\n")
    assert listener.wait() == 0
    assert r.stdout == b"from listener\n"
    assert bytes(listener.out) == b"from client\n"
    assert bytes(listener.err) == (f"Bound on {path}\nListening on {path}\n"
                                   f"Connection received on {path}\n").encode()
    assert not os.path.exists(path), "listener must remove the socket file it made"


@pytest.mark.native_only
def test_unix_abstract_namespace():
    name = f"@pync-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = Proc(pync_cmd("-lU", "-v", name), stdin=subprocess.DEVNULL)
    listener.wait_stderr("Listening on")
    r = run_pync("-N", "-U", name, input=b"abstract\n")
    assert listener.wait() == 0 and r.returncode == 0
    assert bytes(listener.out) == b"abstract\n"


@pytest.mark.native_only
def test_unix_stale_socket_replaced_but_regular_file_kept(sock_dir):
    stale = os.path.join(sock_dir, "stale")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()  # leaves a socket file nobody listens on
    listener = Proc(pync_cmd("-lU", "-v", stale), stdin=subprocess.DEVNULL)
    listener.wait_stderr("Listening on")
    run_pync("-N", "-U", stale, input=b"ok")
    assert listener.wait() == 0 and bytes(listener.out) == b"ok"

    regular = os.path.join(sock_dir, "file")
    with open(regular, "w") as f:
        f.write("precious")
    r = run_pync("-lU", regular)
    assert (r.returncode, r.stderr) == (1, b"pync: Address already in use\n")
    with open(regular) as f:
        assert f.read() == "precious"


@pytest.mark.native_only
def test_unix_connect_missing_path(sock_dir):
    path = os.path.join(sock_dir, "nothing")
    r = run_pync("-U", path)
    assert (r.returncode, r.stderr) == (1, f"pync: {path}: No such file or directory\n".encode())


def test_idle_timeout_w_exits_zero():
    srv = Server(lambda conn: recv_all(conn))  # silent until pync leaves
    p = Proc(pync_cmd("-w", "1", "127.0.0.1", str(srv.port)))  # stdin stays open
    assert p.wait() == 0
    srv.join()
    p.close_stdin()


def test_q1_connect_shuts_down_and_waits_for_server():
    events = {}

    def server(conn):
        events["data"] = recv_all(conn)  # returns at pync's shutdown
        conn.sendall(b"late reply\n")

    srv = Server(server)
    r = run_pync("-q", "1", "127.0.0.1", str(srv.port), input=b"x")
    srv.join()
    assert events["data"] == b"x"
    assert (r.returncode, r.stdout) == (0, b"late reply\n")


def test_listen_q0_exits_at_stdin_eof():
    listener, port = start_listener("-q", "0")
    with connect(port) as c:
        listener.wait_stderr("Connection received")
        listener.send(b"hello\n")
        listener.close_stdin()
        assert listener.wait() == 0  # the client never closed
        assert recv_all(c) == b"hello\n"


def test_listen_ends_at_network_eof_with_stdin_open():
    listener, port = start_listener()
    with connect(port) as c:
        c.sendall(b"bye\n")
    assert listener.wait() == 0
    assert bytes(listener.out) == b"bye\n"
    listener.close_stdin()


def test_d_ignores_stdin():
    srv = Server(lambda conn: conn.sendall(b"served\n"))
    p = Proc(pync_cmd("-d", "127.0.0.1", str(srv.port)))  # stdin never closed
    assert p.wait() == 0
    srv.join()
    assert bytes(p.out) == b"served\n"
    p.close_stdin()


def test_crlf():
    got = {}
    srv = Server(lambda conn: got.setdefault("data", recv_all(conn)))
    r = run_pync("-N", "-C", "127.0.0.1", str(srv.port), input=b"a\nb\r\n\n")
    srv.join()
    assert r.returncode == 0
    assert got["data"] == b"a\r\nb\r\n\r\n"


def test_interval_delays_lines():
    times = []

    def server(conn):
        buf = b""
        while True:
            d = conn.recv(100)
            if not d:
                break
            buf += d
            times.extend([time.monotonic()] * d.count(b"\n"))
        assert buf == b"1\n2\n"

    srv = Server(server)
    r = run_pync("-N", "-i", "1", "127.0.0.1", str(srv.port), input=b"1\n2\n")
    srv.join()
    assert r.returncode == 0
    assert len(times) == 2
    assert times[1] - times[0] >= 0.9  # a second between lines (-i counts whole seconds)


def test_recv_limit_W():
    def server(conn):
        conn.sendall(b"first\n")
        conn.recv(1)  # pync leaves after one read: this returns at its close

    srv = Server(server)
    p = Proc(pync_cmd("-W", "1", "127.0.0.1", str(srv.port)))
    assert p.wait() == 0
    srv.join()
    assert bytes(p.out) == b"first\n"


def test_stdout_closed_early_is_quiet():
    def server(conn):
        try:
            for _ in range(2000):
                conn.sendall(b"y" * 4096)
        except OSError:
            pass

    srv = Server(server)
    r = subprocess.run(f"{' '.join(pync_cmd('-d', '127.0.0.1', str(srv.port)))} | head -c 100",
                       shell=True, capture_output=True, timeout=TIMEOUT)
    srv.join()
    assert r.stdout == b"y" * 100
    assert r.stderr == b""


@posix_only
def test_sigint_exits_130_without_traceback():
    listener, _port = start_listener()
    listener.p.send_signal(signal.SIGINT)
    assert listener.wait() == 130
    assert b"Traceback" not in listener.err


@posix_only
@pytest.mark.native_only
def test_sigterm_removes_unix_socket(sock_dir):
    path = os.path.join(sock_dir, "t")
    listener = Proc(pync_cmd("-lU", "-k", "-v", path))
    listener.wait_stderr("Listening on")
    assert os.path.exists(path)
    listener.p.send_signal(signal.SIGTERM)
    assert listener.wait() == 128 + signal.SIGTERM
    assert not os.path.exists(path)
    assert b"Traceback" not in listener.err


def test_verbose_connect_messages():
    srv = Server(lambda conn: None)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, not listening: refused
    r = run_pync("-v", "-n", "127.0.0.1", str(closed_port), str(srv.port))
    closed.close()
    srv.join()
    assert r.returncode == 0
    assert r.stderr.decode().splitlines() == [
        f"pync: connect to 127.0.0.1 port {closed_port} (tcp) failed: Connection refused",
        f"Connection to 127.0.0.1 {srv.port} port [tcp/*] succeeded!",
    ]


def test_refused_is_silent_without_v():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    r = run_pync("127.0.0.1", str(port))
    s.close()
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"")


def test_source_address_and_port():
    peer = {}

    def server(conn):
        peer["addr"] = conn.getpeername()

    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    src_port = free.getsockname()[1]
    free.close()
    srv = Server(server)
    r = run_pync("-s", "127.0.0.1", "-p", str(src_port), "127.0.0.1", str(srv.port))
    srv.join()
    assert r.returncode == 0
    assert peer["addr"] == ("127.0.0.1", src_port)


def test_address_already_in_use():
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    r = run_pync("-l", "127.0.0.1", str(held.getsockname()[1]))
    held.close()
    assert (r.returncode, r.stderr) == (1, b"pync: Address already in use\n")


def test_connect_timeout_w():
    # A listener whose backlog is full drops SYNs: connect hangs until -w.
    held: list[socket.socket] = []
    port = filtered_port(held)
    r = run_pync("-v", "-w", "1", "127.0.0.1", str(port))
    for s in held:
        s.close()
    assert r.returncode == 1
    assert r.stderr == (f"pync: connect to 127.0.0.1 port {port} (tcp) timed out: "
                        "Operation now in progress\n").encode()


def test_python_dash_m_and_console_script_agree():
    import shutil
    import sys

    script = shutil.which("pync") or os.path.join(os.path.dirname(sys.executable), "pync")
    a = subprocess.run([script, "--version"], capture_output=True, timeout=TIMEOUT)
    b = run_pync("--version")
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout and a.stdout.startswith(b"pync ")
    h = run_pync("-h")
    assert h.returncode == 0 and b"Command Summary" in h.stdout
