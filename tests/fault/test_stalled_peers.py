"""Peers that stall, close early or half-close.

A peer that never reads makes pync block on a full socket: its memory stays
bounded (VmRSS from /proc, sampled while 256 MiB wait on its stdin) and it
ends the way the options say: -w after that much idle time, or a signal.
The same holds the other way, for a stdout nobody reads.  A peer that closes
early ends pync at once, status 0 as nc; a peer that half-closes still
receives everything (connect mode), as nc.
"""

from __future__ import annotations

import fcntl
import signal
import socket
import struct
import subprocess
import termios
import threading
import time

import pytest
from faultkit import children_of, state, vm_rss_kib, wait_send_blocked, wait_until
from pynctest import TIMEOUT, Server, connect, pync_cmd, recv_all, require_tool

MiB = 1024 * 1024
RSS_LIMIT_KIB = 40 * 1024
OFFERED = "256M"


@pytest.fixture(params=["zero-copy", "copy"])
def relay_path(request, monkeypatch):
    monkeypatch.setenv("PYNC_ZERO_COPY", "1" if request.param == "zero-copy" else "0")
    return request.param


def zeros(size: str = OFFERED) -> subprocess.Popen:
    """A pipe offering size bytes of zeros: ``head -c SIZE /dev/zero``."""
    return subprocess.Popen(["head", "-c", size, "/dev/zero"], stdout=subprocess.PIPE)


def queued(sock: socket.socket) -> int:
    """Bytes waiting unread in sock's receive queue."""
    raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", raw)[0]


def peak_rss_until_exit(p: subprocess.Popen, timeout: float = TIMEOUT) -> int:
    """Sample the process's VmRSS until it exits (bounded); the peak, in KiB."""
    peak = 0
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while p.poll() is None and time.monotonic() < deadline:
        try:
            peak = max(peak, vm_rss_kib(p.pid))
        except (OSError, AssertionError):
            break  # exited between poll() and the read
        tick.wait(0.01)  # sleep-ok: sampling interval of /proc
    return peak


def wait_stalled(sock: socket.socket) -> None:
    """Until the bytes queued on sock stop growing: the sender is blocked."""
    last = [-1, 0]

    def steady() -> bool:
        now = queued(sock)
        last[1] = last[1] + 1 if now == last[0] and now > 0 else 0
        last[0] = now
        return last[1] >= 5

    wait_until(steady, what="the sender to block on a full socket")


def rss_now_kib(pid: int, samples: int = 10) -> int:
    peak = 0
    tick = threading.Event()
    for _ in range(samples):
        peak = max(peak, vm_rss_kib(pid))
        tick.wait(0.01)  # sleep-ok: sampling interval of /proc
    return peak


def test_never_reading_peer_bounded_memory_then_w_ends_it(relay_path):
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(1)  # accepts (in the kernel) and never reads
    src = zeros()
    p = subprocess.Popen(pync_cmd("-w", "1", "127.0.0.1", str(stalled.getsockname()[1])),
                         stdin=src.stdout, stderr=subprocess.PIPE)
    src.stdout.close()
    try:
        peak = peak_rss_until_exit(p)
        _, err = p.communicate(timeout=TIMEOUT)
    finally:
        p.kill()
        src.kill()
        src.wait()
        stalled.close()
    assert (p.returncode, err) == (0, b"")  # -w: idle for 1 s, status 0 as nc
    assert 0 < peak < RSS_LIMIT_KIB, f"peak VmRSS {peak} KiB"


def test_never_reading_peer_w_reference_nc():
    """The reference for the test above: nc -w 1 ends the same way, status 0, silent."""
    nc = require_tool("nc")
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(1)
    src = zeros("64M")
    r = subprocess.run([nc, "-w", "1", "127.0.0.1", str(stalled.getsockname()[1])],
                       stdin=src.stdout, capture_output=True, timeout=TIMEOUT)
    src.kill()
    src.wait()
    stalled.close()
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def test_listener_blocked_on_a_client_that_never_reads_ends_by_signal(relay_path):
    """-l -q 1: stdin never reaches EOF (pync blocks on the socket), so only
    a signal ends it; meanwhile its memory stays bounded."""
    src = zeros()
    p = subprocess.Popen(pync_cmd("-l", "-v", "-n", "-q", "1", "127.0.0.1", "0"),
                         stdin=src.stdout, stderr=subprocess.PIPE)
    src.stdout.close()
    try:
        line = p.stderr.readline().decode()
        assert line.startswith("Listening on ")
        c = connect(int(line.split()[-1]))
        wait_stalled(c)
        assert vm_rss_kib(p.pid) < RSS_LIMIT_KIB
        assert rss_now_kib(p.pid) < RSS_LIMIT_KIB
        assert p.poll() is None  # -q waits for a stdin EOF that cannot come
        p.send_signal(signal.SIGTERM)
        assert p.wait(TIMEOUT) == 143
        assert b"Traceback" not in p.stderr.read()
        c.close()
    finally:
        p.kill()
        p.wait()
        src.kill()
        src.wait()


def test_listener_q_ends_after_stdin_eof_with_a_client_that_never_reads():
    """-l -q 1 and a small stdin: it all fits in the socket buffers, stdin
    ends, and 1 s later pync exits 0 though the client never read or closed
    (nc 1.219 does the same: DESIGN.md's table)."""
    p = subprocess.Popen(pync_cmd("-l", "-v", "-n", "-q", "1", "127.0.0.1", "0"),
                         stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = p.stderr.readline().decode()
        with connect(int(line.split()[-1])) as c:
            assert p.stderr.readline().startswith(b"Connection received")
            p.stdin.write(b"x" * 65536)
            p.stdin.close()  # EOF: -q 1 starts counting
            assert p.wait(TIMEOUT) == 0
            assert queued(c) == 65536  # all of it waits, unread, in the client's socket
        assert b"Traceback" not in p.stderr.read()
    finally:
        p.kill()
        p.wait()
        p.stderr.close()


def test_exec_child_flooding_a_client_that_never_reads():
    """-e whose child writes forever to a client that never reads: bounded
    memory, and SIGTERM ends pync and its child."""
    p = subprocess.Popen(pync_cmd("-l", "-v", "-n", "-c", "exec cat /dev/zero", "127.0.0.1",
                                  "0"), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        line = p.stderr.readline().decode()
        c = connect(int(line.split()[-1]))
        wait_stalled(c)
        kids = children_of(p.pid)
        assert len(kids) == 1
        assert rss_now_kib(p.pid) < RSS_LIMIT_KIB
        p.send_signal(signal.SIGTERM)
        assert p.wait(TIMEOUT) == 143
        wait_until(lambda: state(kids[0]) in ("gone", "Z"), what="the child to end")
        c.close()
    finally:
        p.kill()
        p.wait()


def test_stdout_nobody_reads_keeps_memory_bounded(relay_path):
    """The other way round: the peer floods, pync's stdout is a pipe never read."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(TIMEOUT)
    p = subprocess.Popen(pync_cmd("-d", "127.0.0.1", str(lsock.getsockname()[1])),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    conn, _ = lsock.accept()

    def flood() -> None:
        chunk = b"z" * MiB
        try:
            for _ in range(256):
                conn.sendall(chunk)
        except OSError:
            pass  # pync was stopped

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        wait_send_blocked(conn)  # pync stopped taking bytes: every buffer is full
        assert flooder.is_alive()
        assert rss_now_kib(p.pid) < RSS_LIMIT_KIB
        p.send_signal(signal.SIGINT)
        assert p.wait(TIMEOUT) == 130
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
        conn.close()
        lsock.close()
        flooder.join(TIMEOUT)
    assert b"Traceback" not in p.stderr.read()
    p.stderr.close()


def test_peer_closing_early_ends_pync_at_once(relay_path):
    """The peer says bye and closes without reading 256 MiB: pync prints
    bye, stops sending, exits 0 (as nc) without waiting for its stdin."""
    def bye(conn: socket.socket) -> None:
        conn.sendall(b"bye\n")

    srv = Server(bye)
    src = zeros()
    p = subprocess.Popen(pync_cmd("127.0.0.1", str(srv.port)), stdin=src.stdout,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    src.stdout.close()
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        p.kill()
        src.kill()
        src.wait()
    srv.join()
    assert (p.returncode, out, err) == (0, b"bye\n", b"")


def test_peer_half_close_connect_mode_still_gets_everything(relay_path):
    """As nc: after the peer's EOF, connect mode sends the rest of stdin."""
    got = {}

    def half(conn: socket.socket) -> None:
        conn.sendall(b"bye\n")
        conn.shutdown(socket.SHUT_WR)
        got["n"] = len(recv_all(conn))

    srv = Server(half)
    src = zeros("32M")
    p = subprocess.Popen(pync_cmd("-N", "127.0.0.1", str(srv.port)), stdin=src.stdout,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    src.stdout.close()
    out, err = p.communicate(timeout=TIMEOUT)
    src.wait()
    srv.join()
    assert (p.returncode, out, err) == (0, b"bye\n", b"")
    assert got["n"] == 32 * MiB


def test_peer_half_close_listen_mode_ends_the_session():
    """As nc: in listen mode the peer's EOF ends the session, stdin or not."""
    src = zeros()
    p = subprocess.Popen(pync_cmd("-l", "-v", "-n", "127.0.0.1", "0"), stdin=src.stdout,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    src.stdout.close()
    try:
        line = p.stderr.readline().decode()
        with connect(int(line.split()[-1])) as c:
            c.sendall(b"bye\n")
            c.shutdown(socket.SHUT_WR)
            recv_all(c)  # pync closes: the session is over
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        p.kill()
        src.kill()
        src.wait()
    assert (p.returncode, out) == (0, b"bye\n")
    assert b"Traceback" not in err
