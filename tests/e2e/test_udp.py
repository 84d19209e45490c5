"""UDP and UNIX datagram mode (-u): message boundaries, peers, endings."""

from __future__ import annotations

import os
import socket
import subprocess
import threading

import pytest
from pynctest import TIMEOUT, Proc, pync_cmd, run_pync, wait_until

pytestmark = pytest.mark.usefixtures("pync_backend")


class UpperServer:
    """The classic: recvfrom, upper(), sendto — in a thread, bounded."""

    def __init__(self, replies: int = 1) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.sizes: list[int] = []
        self.thread = threading.Thread(target=self._serve, args=(replies,), daemon=True)
        self.thread.start()

    def _serve(self, replies: int) -> None:
        for _ in range(replies):
            data, peer = self.sock.recvfrom(70000)
            self.sizes.append(len(data))
            self.sock.sendto(data.upper(), peer)

    def join(self) -> None:
        self.thread.join(TIMEOUT)
        self.sock.close()


def test_uppercase_server_answers():
    srv = UpperServer()
    r = run_pync("-u", "-q", "1", "127.0.0.1", str(srv.port), input=b"hello udp\n")
    srv.join()
    assert (r.returncode, r.stdout, r.stderr) == (0, b"HELLO UDP\n", b"")


def test_60000_byte_datagram_arrives_whole(tmp_path):
    data = os.urandom(60000)
    path = tmp_path / "d"
    path.write_bytes(data)
    srv = UpperServer()
    with open(path, "rb") as f:
        r = subprocess.run(pync_cmd("-u", "-q", "1", "127.0.0.1", str(srv.port)), stdin=f,
                           capture_output=True, timeout=TIMEOUT)
    srv.join()
    assert srv.sizes == [60000]
    assert r.stdout == data.upper()


def test_icmp_refused_is_reported_and_exits_1():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens: the kernel answers port unreachable
    p = Proc(pync_cmd("-u", "-v", "-n", "127.0.0.1", str(port)))
    p.send(b"anyone?\n")  # stdin stays open: only the error can end it
    assert p.wait() == 1
    p.close_stdin()
    assert bytes(p.err).decode().splitlines() == [
        f"Connection to 127.0.0.1 {port} port [udp/*] succeeded!",
        f"pync: read from 127.0.0.1 port {port} (udp) failed: Connection refused",
    ]


def test_no_probe_datagrams_before_user_data():
    srv = UpperServer()
    r = run_pync("-u", "-v", "-q", "1", "127.0.0.1", str(srv.port), input=b"only this")
    srv.join()
    assert srv.sizes == [9]
    assert r.stdout == b"ONLY THIS"


def start_udp_listener(*args: str) -> tuple[Proc, int]:
    p = Proc(pync_cmd("-u", "-l", "-v", "-n", *args, "127.0.0.1", "0"))
    m = p.wait_stderr(r"Bound on 127\.0\.0\.1 (\d+)\n")
    return p, int(m.group(1))


def test_listener_replies_to_first_sender():
    listener, port = start_udp_listener()
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(TIMEOUT)
    c.sendto(b"first\n", ("127.0.0.1", port))
    listener.wait_stdout(r"first\n")
    listener.wait_stderr(rf"Connection received on 127\.0\.0\.1 {c.getsockname()[1]}\n")
    listener.send(b"reply\n")
    assert c.recvfrom(100) == (b"reply\n", ("127.0.0.1", port))
    c.sendto(b"second\n", ("127.0.0.1", port))
    listener.wait_stdout(r"first\nsecond\n")
    listener.p.terminate()
    listener.wait()
    c.close()


def test_listener_with_socat_and_nc_senders():
    from pynctest import require_tool

    socat, nc = require_tool("socat"), require_tool("nc")
    listener, port = start_udp_listener("-k")
    subprocess.run([socat, "-u", "STDIN", f"UDP:127.0.0.1:{port}"], input=b"via socat\n",
                   timeout=TIMEOUT, check=True)
    listener.wait_stdout(r"via socat\n")
    subprocess.run([nc, "-u", "-q", "0", "127.0.0.1", str(port)], input=b"via nc\n",
                   timeout=TIMEOUT, check=True)
    listener.wait_stdout(r"via socat\nvia nc\n")
    listener.p.terminate()
    listener.wait()


def test_keep_open_hears_two_senders_and_answers_the_latest():
    listener, port = start_udp_listener("-k")
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.settimeout(TIMEOUT)
    a.sendto(b"from a\n", ("127.0.0.1", port))
    listener.wait_stdout(r"from a\n")
    b.sendto(b"from b\n", ("127.0.0.1", port))
    listener.wait_stdout(r"from a\nfrom b\n")
    listener.send(b"to the latest\n")
    assert b.recvfrom(100)[0] == b"to the latest\n"
    a.sendto(b"a again\n", ("127.0.0.1", port))
    listener.wait_stdout(r"a again\n")
    listener.send(b"now a\n")
    assert a.recvfrom(100)[0] == b"now a\n"
    listener.p.terminate()
    listener.wait()
    a.close()
    b.close()


@pytest.mark.native_only
def test_unix_datagram_sockets(sock_dir):
    path = os.path.join(sock_dir, "dg")
    listener = Proc(pync_cmd("-U", "-u", "-l", "-v", path))
    listener.wait_stderr(rf"Bound on {path}\n")
    own = os.path.join(sock_dir, "mine")
    client = Proc(pync_cmd("-U", "-u", "-s", own, path))
    client.send(b"over a unix datagram\n")
    listener.wait_stdout(r"over a unix datagram\n")
    listener.send(b"and back\n")
    client.wait_stdout(r"and back\n")
    for p in (client, listener):
        p.p.terminate()
        p.wait()
    assert os.listdir(sock_dir) == []  # both socket files removed


def test_w_ends_an_idle_udp_session():
    srv = UpperServer()
    p = Proc(pync_cmd("-u", "-w", "1", "127.0.0.1", str(srv.port)))
    p.send(b"ping\n")
    p.wait_stdout(r"PING\n")
    assert p.wait() == 0  # 1 s after the reply, with stdin still open
    p.close_stdin()
    srv.join()


def test_listener_answers_socat_then_nc_as_first_sender():
    from pynctest import require_tool

    for argv in (lambda port: [require_tool("socat"), "-", f"UDP:127.0.0.1:{port}"],
                 lambda port: [require_tool("nc"), "-u", "127.0.0.1", str(port)]):
        listener, port = start_udp_listener()
        peer = Proc(argv(port))
        peer.send(b"ping\n")
        listener.wait_stdout(r"ping\n")
        listener.send(b"pong\n")
        peer.wait_stdout(r"pong\n")
        for p in (peer, listener):
            p.p.terminate()
            p.wait()


def test_queued_datagrams_reach_stdout_whole_and_in_order():
    """Datagrams that queue up while pync is busy are read together (many
    per poll) and written to stdout as one stream: each one whole, the
    largest UDP payload among small ones, none merged, cut or reordered."""
    listener, port = start_udp_listener()
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.connect(("127.0.0.1", port))
    expected = bytearray()
    for window in range(5):
        # Windows of 100 datagrams the kernel's buffer holds whole at once.
        for i in range(100):
            size = 65507 if i == 50 else 1 + (window * 100 + i) % 200
            datagram = bytes([(window * 100 + i) % 251]) * size
            c.send(datagram)
            expected += datagram
        total = len(expected)
        wait_until(lambda n=total: len(listener.out) >= n, what=f"{total} bytes on stdout")
    assert bytes(listener.out) == bytes(expected)
    listener.p.terminate()
    listener.wait()
    c.close()


def test_a_destination_that_does_not_read_does_not_spin():
    """Datagrams pile up for a child that never reads its stdin: once the
    buffer has no room for the largest datagram, pync stops watching the
    socket instead of polling it in a loop (a CPU core at 100%)."""
    p = subprocess.Popen(pync_cmd("-u", "-l", "-v", "-n", "127.0.0.1", "0", "-c", "sleep 2"),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    line = p.stderr.readline().decode()
    assert line.startswith("Bound on 127.0.0.1 "), line
    port = int(line.split()[-1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(80):  # 4.8 MB, paced so that the kernel's buffer keeps up
            s.sendto(b"x" * 60000, ("127.0.0.1", port))
            threading.Event().wait(0.005)  # sleep-ok: pacing the sender, not a synchronisation
    _, status, usage = os.wait4(p.pid, 0)  # the child's end ends the session
    p.returncode = 0
    p.stderr.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert usage.ru_utime + usage.ru_stime < 1.0, "busy-polled a full buffer"
