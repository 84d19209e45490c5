"""Session dumps (-o, --hex-dump), telnet negotiation (-t), fd passing (-F)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pexpect
import pytest
from pynctest import TIMEOUT, Server, connect, pync_cmd, recv_all, run_pync, start_listener

pytestmark = pytest.mark.usefixtures("pync_backend")


def ping_pong_server(reply: bytes) -> Server:
    """Reads a line, answers reply, reads to EOF."""
    def handler(conn: socket.socket) -> None:
        data = b""
        while not data.endswith(b"\n"):
            data += conn.recv(100)
        conn.sendall(reply)
        recv_all(conn)
    return Server(handler)


def test_output_records_both_directions_raw(tmp_path):
    srv = ping_pong_server(b"world\n")
    dump = tmp_path / "raw"
    r = run_pync("-N", "-o", str(dump), "127.0.0.1", str(srv.port), input=b"hello\n")
    srv.join()
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"world\n"
    assert dump.read_bytes() == b"hello\nworld\n"


def test_hex_dump_marks_each_direction(tmp_path):
    srv = ping_pong_server(b"hi\n")
    dump = tmp_path / "hex"
    r = run_pync("-N", "--hex-dump", str(dump), "127.0.0.1", str(srv.port),
                 input=b"hello\n")
    srv.join()
    assert r.returncode == 0, r.stderr
    assert dump.read_text() == (
        "> 6 bytes sent\n"
        "00000000  68 65 6c 6c 6f 0a                                 |hello.|\n"
        "< 3 bytes received\n"
        "00000000  68 69 0a                                          |hi.|\n")


def test_dump_files_truncate_or_append(tmp_path):
    dump = tmp_path / "raw"
    dump.write_bytes(b"old\n")
    for args, expected in ((["-o"], b"one\n"),
                           (["--append-output", "-o"], b"one\ntwo\n")):
        line = expected.splitlines()[-1] + b"\n"
        srv = Server(lambda conn: recv_all(conn))
        r = run_pync("-N", *args, str(dump), "127.0.0.1", str(srv.port), input=line)
        srv.join()
        assert r.returncode == 0, r.stderr
        assert dump.read_bytes() == expected


def test_dump_records_every_session_of_a_keep_open_listener(tmp_path):
    dump = tmp_path / "raw"
    server, port = start_listener("-k", "-o", str(dump), stdin=subprocess.DEVNULL)
    try:
        for word in (b"first\n", b"second\n"):
            with connect(port) as s:
                s.sendall(word)
                s.shutdown(socket.SHUT_WR)
                assert recv_all(s) == b""
            server.wait_stdout(word.decode())
    finally:
        server.p.terminate()
        server.wait()
    assert dump.read_bytes() == b"first\nsecond\n"


IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240


def telnet_server(sent: list[bytes]) -> Server:
    """Negotiates (split across two sends), talks, and records pync's replies."""
    def handler(conn: socket.socket) -> None:
        conn.sendall(bytes([IAC, DO, 1, IAC]))  # IAC WILL 3 split across sends
        conn.sendall(bytes([WILL, 3]) + b"hel" + bytes([IAC, IAC]) + b"lo"
                     + bytes([IAC, SB, 24, 1, IAC, SE]) + b"\n")
        conn.shutdown(socket.SHUT_WR)
        sent.append(recv_all(conn))
    return Server(handler)


def test_telnet_answers_and_strips_negotiation():
    replies: list[bytes] = []
    srv = telnet_server(replies)
    r = run_pync("-t", "127.0.0.1", str(srv.port))
    srv.join()
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hel\xfflo\n"  # negotiation stripped, IAC IAC is one 0xff
    # nc 1.219's replies: IAC WONT for DO, IAC DONT for WILL.
    assert replies == [bytes([IAC, WONT, 1, IAC, DONT, 3])]


def test_telnet_replies_match_nc():
    """nc -t gives the same replies (for sequences not split across reads)."""
    nc = shutil.which("nc")
    if nc is None:
        pytest.skip("nc not installed")
    outcomes = []
    for cmd in ([nc], pync_cmd()):
        replies: list[bytes] = []

        def handler(conn: socket.socket, replies: list[bytes] = replies) -> None:
            conn.sendall(bytes([IAC, DO, 1, IAC, WILL, 3]) + b"hello\n")
            conn.shutdown(socket.SHUT_WR)
            replies.append(recv_all(conn))

        srv = Server(handler)
        r = subprocess.run([*cmd, "-t", "127.0.0.1", str(srv.port)],
                           capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        srv.join()
        outcomes.append((replies, r.returncode))
    assert outcomes[0] == outcomes[1] == ([bytes([IAC, WONT, 1, IAC, DONT, 3])], 0)


@pytest.mark.native_only
def test_fd_pass_hands_the_connection_over():
    def handler(conn: socket.socket) -> None:
        assert conn.recv(100) == b"from the receiver\n"
        conn.sendall(b"to the receiver\n")

    srv = Server(handler)
    mine, theirs = socket.socketpair()
    with mine, theirs:
        r = subprocess.run(pync_cmd("-F", "127.0.0.1", str(srv.port)), stdout=theirs,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=TIMEOUT)
        assert r.returncode == 0, r.stderr
        assert r.stderr == b""
        mine.settimeout(TIMEOUT)
        msg, fds, _, _ = socket.recv_fds(mine, 16, 1)
        assert msg == b"\0" and len(fds) == 1
        with socket.socket(fileno=fds[0]) as passed:
            passed.settimeout(TIMEOUT)
            passed.sendall(b"from the receiver\n")
            assert passed.recv(100) == b"to the receiver\n"
    srv.join()


@pytest.mark.native_only
@pytest.mark.parametrize("tool", ["nc", "pync"])
def test_fd_pass_to_a_pipe_fails_as_nc(tool):
    if tool == "nc" and shutil.which("nc") is None:
        pytest.skip("nc not installed")
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        cmd = ["nc"] if tool == "nc" else pync_cmd()
        r = subprocess.run([*cmd, "-F", "127.0.0.1", str(lsock.getsockname()[1])],
                           capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert r.stderr == f"{tool}: sendmsg: Socket operation on non-socket\n".encode()


@pytest.mark.native_only
def test_fd_pass_refuses_a_terminal():
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        cmd = pync_cmd("-F", "127.0.0.1", str(lsock.getsockname()[1]))
        child = pexpect.spawn(cmd[0], cmd[1:], timeout=TIMEOUT, env=dict(os.environ))
        child.expect_exact("pync: Cannot pass file descriptor to tty")
        child.expect(pexpect.EOF)
        child.close()
    assert child.exitstatus == 1
