"""Faults found in review: urgent data, long timers, -C against a stalled
peer, resets, unsupported sockets, -W on a datagram listener."""

from __future__ import annotations

import os
import socket
import struct
import subprocess

import pytest
from pynctest import TIMEOUT, Proc, Server, pync_cmd, run_pync, start_listener


def test_tcp_urgent_data_loses_nothing_after_it(relay_path):
    """splice() stops at the urgent mark; the bytes after it still arrive."""
    listener, port = start_listener()  # stdout is a pipe: the splice path
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as c:
        c.sendall(b"abc\n")
        c.send(b"!", socket.MSG_OOB)
        c.sendall(b"def\n")
    assert listener.wait() == 0
    listener.close_stdin()
    assert bytes(listener.out) == b"abc\ndef\n"  # as nc: the urgent byte is skipped


def test_q_waits_without_spinning():
    srv = Server(lambda conn: None)  # closes at once
    p = subprocess.Popen(pync_cmd("-q", "2", "127.0.0.1", str(srv.port)),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = 0
    srv.join()
    assert os.waitstatus_to_exitcode(status) == 0
    assert usage.ru_utime + usage.ru_stime < 1.0, "busy-waited through -q"


def test_a_dialogue_then_silence_does_not_spin(relay_path):
    """In a dialogue pync polls a few microseconds before sleeping (lower
    latency); when the dialogue stops, that window must shrink away, not
    become a busy loop: 500 round trips, then -w 1 of silence, and the whole
    session costs far less than the idle second in CPU."""
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        p = subprocess.Popen(pync_cmd("-w", "1", "127.0.0.1", str(lsock.getsockname()[1])),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        conn, _ = lsock.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            for _ in range(500):
                conn.sendall(b"x")
                assert p.stdout.read(1) == b"x"
                p.stdin.write(b"y")
                assert conn.recv(1) == b"y"
            _, status, usage = os.wait4(p.pid, 0)  # -w 1 ends it, stdin still open
    p.returncode = 0
    p.stdin.close()
    p.stdout.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert usage.ru_utime + usage.ru_stime < 0.6, "spun through the silence"


def test_crlf_against_a_peer_that_never_reads(tmp_path):
    data = tmp_path / "lines"
    data.write_bytes(b"a" + b"\n" * 20_000_000)
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(1)
    with open(data, "rb") as f:
        r = subprocess.run(pync_cmd("-O", "4096", "-C", "-w", "1", "127.0.0.1",
                                    str(stalled.getsockname()[1])),
                           stdin=f, capture_output=True, timeout=TIMEOUT)
    stalled.close()
    assert (r.returncode, r.stderr) == (0, b"")  # -w ended it; no traceback


def test_huge_interval_is_no_traceback():
    got = {}

    def server(conn):
        got["first"] = conn.recv(10)

    srv = Server(server)
    p = Proc(pync_cmd("-i", "4000000", "127.0.0.1", str(srv.port)))
    p.send(b"a\nb\n")
    srv.join()  # the first line arrived, the second waits its turn
    assert p.running()
    p.kill()
    assert got["first"] == b"a\n"
    assert b"Traceback" not in p.err


@pytest.mark.parametrize("verbose", ["-v", "-vv"])
def test_reset_status_0_as_nc_and_reported_under_vv(verbose):
    """nc 1.219 exits 0 and says nothing of a reset, even with -v; -vv tells."""
    def server(conn):
        conn.sendall(b"hello\n")
        conn.recv(10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    srv = Server(server)
    p = Proc(pync_cmd(verbose, "-n", "127.0.0.1", str(srv.port)))
    p.wait_stdout(r"hello\n")
    p.send(b"x")
    assert p.wait() == 0
    srv.join()
    p.close_stdin()
    lines = bytes(p.err).decode().splitlines()
    reset = (f"pync: read from 127.0.0.1 port {srv.port} (tcp) failed: "
             "Connection reset by peer")
    if verbose == "-v":
        assert lines == [f"Connection to 127.0.0.1 {srv.port} port [tcp/*] succeeded!"]
    else:
        assert reset in lines


def test_unsupported_socket_type_is_one_line():
    r = run_pync("-Z", "127.0.0.1", "9")
    assert r.returncode == 1
    assert r.stderr.startswith(b"pync: ") and r.stderr.count(b"\n") == 1


def test_recv_limit_counts_the_first_datagram():
    listener = Proc(pync_cmd("-u", "-l", "-v", "-n", "-W", "1", "127.0.0.1", "0"))
    port = int(listener.wait_stderr(r"Bound on \S+ (\d+)\n").group(1))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"one\n", ("127.0.0.1", port))
    assert listener.wait() == 0
    s.close()
    listener.close_stdin()
    assert bytes(listener.out) == b"one\n"


@pytest.mark.parametrize("kind", ["socket", "pipe"])
def test_stdin_socket_never_blocks_the_relay(kind):
    """stdin a blocking socket (inetd, socket activation): after a large read
    the relay must poll again, not block in the next read while the network
    has something for stdout."""
    def server(conn):
        got = 0
        while got < 200_000:
            got += len(conn.recv(65536))
        conn.sendall(b"REPLY\n")
        conn.recv(1)  # until pync goes

    srv = Server(server)
    if kind == "socket":
        mine, theirs = socket.socketpair()
        feed = mine.sendall
    else:
        r, w = os.pipe()
        theirs, feed = r, (lambda data: os.write(w, data))  # type: ignore[assignment]
    p = Proc(pync_cmd("127.0.0.1", str(srv.port)), stdin=theirs)
    try:
        feed(b"x" * 200_000)  # stdin stays open and silent after this
        p.wait_stdout(r"REPLY\n", timeout=10)
    finally:
        p.kill()
        srv.join()
