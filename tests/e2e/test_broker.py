"""--broker and --chat rooms, access control, connection limits, send/recv-only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pexpect
import pytest
from pynctest import TIMEOUT, Proc, Server, pync_cmd, recv_all, run_pync

pytestmark = pytest.mark.usefixtures("pync_backend")


def start_room(*args: str) -> tuple[Proc, int]:
    p = Proc(pync_cmd("-l", "-v", "-n", *args, "127.0.0.1", "0"))
    return p, int(p.wait_stderr(r"Listening on \S+ (\d+)\n").group(1))


def client(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.settimeout(TIMEOUT)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_until(s: socket.socket, want: bytes) -> bytes:
    got = b""
    while want not in got:
        chunk = s.recv(65536)
        assert chunk, f"connection closed before {want!r}; got {got!r}"
        got += chunk
    return got


def test_three_terminals_in_a_chat_room():
    room, port = start_room("--chat")
    terms = []
    for i in range(3):
        t = pexpect.spawn(sys.executable, ["-m", "pync", "-N", "127.0.0.1", str(port)],
                          timeout=TIMEOUT, echo=False)
        room.wait_stderr(r"(?:Connection received[^\n]*\n){" + str(i + 1) + "}")
        terms.append(t)
    a, b, c = terms
    a.expect(rb"<announce> (user\d+) has joined\r\n")
    b_name = a.match.group(1).decode()
    a.expect(rb"<announce> (user\d+) has joined\r\n")
    c_name = a.match.group(1).decode()
    a.sendline("/nick alice")
    b.expect_exact(b"is now known as alice\r\n")
    c.expect_exact(b"is now known as alice\r\n")
    a.sendline("hello room")
    b.expect_exact(b"<alice> hello room\r\n")
    c.expect_exact(b"<alice> hello room\r\n")
    b.sendline("hi alice")
    a.expect_exact(f"<{b_name}> hi alice\r\n".encode())
    c.send("\x1b[2J sneaky\r")  # raw ESC sequence in a line
    c.sendline("")
    a.expect_exact(f"<{c_name}> \\x1b[2J sneaky".encode())
    c.sendeof()
    c.expect(pexpect.EOF)
    a.expect_exact(f"<announce> {c_name} has left\r\n".encode())
    b.expect_exact(f"<announce> {c_name} has left\r\n".encode())
    for t in (a, b):
        t.close(force=True)
    room.p.terminate()
    room.wait()
    assert b"<alice> hello room\n" in room.out  # the room's stdout sees it all


def test_broker_relays_binary_data_unchanged():
    room, port = start_room("--broker")
    a, b = client(port), client(port)
    room.wait_stderr(r"(?:Connection received[^\n]*\n){2}")
    data = os.urandom(200_000)
    a.sendall(data)
    got = b""
    while len(got) < len(data):
        got += b.recv(65536)
    assert got == data
    room.send(b"from the broker\n")
    assert read_until(a, b"from the broker\n").endswith(b"from the broker\n")
    assert read_until(b, b"from the broker\n").endswith(b"from the broker\n")
    room.wait_stdout(r"(?s).{200000}")
    assert bytes(room.out[:200_000]) == data
    for s in (a, b):
        s.close()
    room.p.terminate()
    room.wait()


def test_allow_deny_and_max_conns_in_the_broker():
    room, port = start_room("--broker", "--allow", "127.0.0.1", "--max-conns", "2")
    denied = client(port, source="127.0.0.2")
    assert recv_all(denied) == b""  # closed at once
    room.wait_stderr(r"new connection denied: not allowed \(127\.0\.0\.2\)")
    a, b = client(port), client(port)
    room.wait_stderr(r"(?:Connection received[^\n]*\n){2}")
    third = client(port)
    assert recv_all(third) == b""
    room.wait_stderr(r"new connection denied: connection limit reached \(2\)")
    a.sendall(b"still fine\n")
    assert read_until(b, b"still fine\n") == b"still fine\n"
    for s in (a, b, denied, third):
        s.close()
    room.p.terminate()
    room.wait()


def test_deny_in_plain_listen_mode_waits_for_an_allowed_client():
    room, port = start_room("--deny", "127.0.0.2/32")
    refused = client(port, source="127.0.0.2")
    assert recv_all(refused) == b""
    room.wait_stderr(r"new connection denied: not allowed \(127\.0\.0\.2\)")
    ok = client(port)
    ok.sendall(b"welcome\n")
    ok.shutdown(socket.SHUT_WR)
    assert room.wait() == 0
    assert bytes(room.out) == b"welcome\n"
    room.close_stdin()


def test_stalled_client_is_dropped_and_the_others_go_on():
    room, port = start_room("--broker")
    stalled = client(port)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a, b = client(port), client(port)
    room.wait_stderr(r"(?:Connection received[^\n]*\n){3}")
    chunk = b"x" * 65536
    sent = 0
    deadline = time.monotonic() + TIMEOUT
    while b"not reading" not in room.err and time.monotonic() < deadline:
        a.sendall(chunk)
        sent += len(chunk)
        got = 0
        while got < len(chunk):  # b keeps up
            got += len(b.recv(65536))
    assert b"disconnected: not reading" in room.err
    a.sendall(b"after\n")
    assert read_until(b, b"after\n").endswith(b"after\n")
    for s in (a, b, stalled):
        s.close()
    room.p.terminate()
    room.wait()


def test_many_clients_each_get_every_line():
    count = 300
    room, port = start_room("--chat", "--max-conns", str(count + 10))
    socks = [client(port) for _ in range(count)]
    room.wait_stderr(r"(?:Connection received[^\n]*\n){" + str(count) + "}")
    socks[0].sendall(b"/nick speaker\nto everyone\n")
    for s in socks[1:]:
        read_until(s, b"<speaker> to everyone\n")
    for s in socks:
        s.close()
    room.p.terminate()
    room.wait()


def test_broker_needs_listen():
    r = run_pync("--broker", "127.0.0.1", "1")
    assert (r.returncode, r.stderr) == (1, b"pync: --broker and --chat need -l\n")


def test_send_only_and_recv_only():
    got = {}

    def server(conn):
        conn.sendall(b"ignored by --send-only\n")
        got["data"] = recv_all(conn)

    srv = Server(server)
    r = run_pync("--send-only", "-N", "127.0.0.1", str(srv.port), input=b"up only\n")
    srv.join()
    assert (r.returncode, r.stdout, got["data"]) == (0, b"", b"up only\n")

    def talker(conn):
        conn.sendall(b"down only\n")
        conn.settimeout(1)
        try:
            got["heard"] = conn.recv(10)
        except socket.timeout:
            got["heard"] = None

    srv = Server(talker)
    r = subprocess.run(pync_cmd("--recv-only", "127.0.0.1", str(srv.port)),
                       input=b"never sent\n", capture_output=True, timeout=TIMEOUT)
    srv.join()
    assert r.stdout == b"down only\n"
    assert got["heard"] in (None, b"")  # nothing from stdin went up


@pytest.mark.parametrize("argv, message", [
    (["--send-only", "--recv-only", "h", "1"], "cannot use --send-only and --recv-only"),
    (["-l", "--chat", "-u", "1"], "cannot use --broker or --chat with -u"),
    (["-l", "--max-conns", "0", "1"], "max-conns too small: 0"),
    (["-l", "--allow", "no-such-host.invalid", "0"],
     "cannot resolve access list entry 'no-such-host.invalid': Name or service not known"),
])
def test_bad_combinations(argv, message):
    r = run_pync(*argv)
    assert (r.returncode, r.stderr) == (1, f"pync: {message}\n".encode())


def test_broker_send_only_and_recv_only():
    room, port = start_room("--broker", "--recv-only")
    a, b = client(port), client(port)
    room.wait_stderr(r"(?:Connection received[^\n]*\n){2}")
    room.send(b"stdin is not read\n")
    a.sendall(b"to b\n")
    assert read_until(b, b"to b\n") == b"to b\n"  # nothing from the room's stdin first
    room.wait_stdout(r"to b\n")
    for s in (a, b):
        s.close()
    room.p.terminate()
    room.wait()
    quiet, port = start_room("--broker", "--send-only")
    a, b = client(port), client(port)
    quiet.wait_stderr(r"(?:Connection received[^\n]*\n){2}")
    quiet.send(b"to all\n")
    assert read_until(a, b"to all\n") == b"to all\n"
    a.sendall(b"for b only\n")
    assert read_until(b, b"for b only\n").endswith(b"for b only\n")
    quiet.p.terminate()
    quiet.wait()
    assert bytes(quiet.out) == b""
    for s in (a, b):
        s.close()
