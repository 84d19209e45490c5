"""-e / -c: a child process as the local end, in listen and connect mode.

What ncat gets wrong (nmap#2163, nmap#2843) is checked here: the child sees
EOF when the peer half-closes and its last output still arrives; the socket
never leaks into the child; every child is reaped.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
from pynctest import (
    TIMEOUT,
    Proc,
    Server,
    children_of,
    connect,
    needs_proc,
    open_fds,
    pync_cmd,
    recv_all,
    start_listener,
    state,
    wait_until,
)

pytestmark = [pytest.mark.usefixtures("pync_backend"), needs_proc]


def exchange(port: int, data: bytes) -> bytes:
    """Send data, half-close, read the answer to EOF."""
    with connect(port) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return recv_all(s)


def open_sockets(pid: int) -> int:
    """How many sockets the process holds."""
    return sum(target.startswith("socket:") for target in open_fds(pid).values())


def test_uppercase_server_serves_clients_at_once():
    server, port = start_listener("-k", "-c", "tr a-z A-Z")
    try:
        # Three clients connected at the same time, answered in reverse order:
        # each connection has its own child, served concurrently.
        socks = [connect(port) for _ in range(3)]
        for i, s in enumerate(socks):
            s.sendall(b"hello %d\n" % i)
        for i, s in reversed(list(enumerate(socks))):
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"HELLO %d\n" % i
            s.close()
    finally:
        server.stop()


def test_sort_answers_after_half_close():
    server, port = start_listener("-e", "sort")
    assert exchange(port, b"pear\napple\nfig\n") == b"apple\nfig\npear\n"
    assert server.wait() == 0
    assert b"Connection received" in server.err


def test_output_after_stdin_eof_is_not_lost():
    """The child keeps writing long after its stdin ended: all of it arrives."""
    script = "cat >/dev/null; i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done"
    server, port = start_listener("-c", script)
    out = exchange(port, b"x" * 100000)
    assert out == b"".join(b"line%d\n" % i for i in range(2000))
    assert server.wait() == 0


def test_wc_counts_a_large_input():
    server, port = start_listener("-c", "wc -c")
    assert exchange(port, os.urandom(3 << 20)).split() == [str(3 << 20).encode()]
    assert server.wait() == 0


def test_environment_describes_the_connection():
    server, port = start_listener(
        "-c", 'echo "$PYNC_REMOTE_ADDR $PYNC_REMOTE_PORT $PYNC_LOCAL_ADDR '
              '$PYNC_LOCAL_PORT $PYNC_PROTO $NCAT_REMOTE_PORT $NCAT_PROTO"')
    with connect(port) as s:
        mine = s.getsockname()
        s.shutdown(socket.SHUT_WR)
        out = recv_all(s)
    assert out.split() == [b"127.0.0.1", str(mine[1]).encode(), b"127.0.0.1",
                           str(port).encode(), b"TCP", str(mine[1]).encode(), b"TCP"]
    assert server.wait() == 0


def test_socket_is_not_inherited_by_the_child():
    """The child holds no socket: neither the connection nor the listener."""
    server, port = start_listener("-c", "ls -l /proc/self/fd/; cat >/dev/null")
    out = exchange(port, b"")
    assert b"socket:" not in out
    assert b"pipe:" in out  # its stdin and stdout are pync's pipes
    assert server.wait() == 0


def test_stderr_stays_pyncs():
    server, port = start_listener("-c", "echo to-peer; echo to-stderr >&2")
    assert exchange(port, b"") == b"to-peer\n"
    assert server.wait() == 0
    assert b"to-stderr\n" in server.err


def test_connect_mode_runs_the_child_against_the_server():
    """pync HOST PORT -e PROG: the server talks to the program."""
    got = []

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"3\n1\n2\n")
        conn.shutdown(socket.SHUT_WR)
        got.append(recv_all(conn))

    srv = Server(handler)
    r = subprocess.run(pync_cmd("-e", "sort -n", "127.0.0.1", str(srv.port)),
                       capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    srv.join()
    assert r.returncode == 0, r.stderr
    assert got == [b"1\n2\n3\n"]
    assert r.stdout == b""


def test_child_exit_ends_the_session_even_if_the_peer_stays():
    """A child that ends at once: the peer gets its output and EOF."""
    server, port = start_listener("-c", "echo bye")
    with connect(port) as s:  # never half-closes
        assert recv_all(s) == b"bye\n"
    assert server.wait() == 0


def test_no_zombies_or_leaked_descriptors_after_many_connections(pync_backend):
    server, port = start_listener("-k", "-e", "cat")
    # Forked workers are cheap; spawned ones (the portable backend) each
    # start an interpreter: fewer of them say the same.
    connections = 200 if pync_backend == "native" else 30
    try:
        base = open_sockets(server.p.pid)
        for i in range(connections):
            assert exchange(port, b"%d\n" % i) == b"%d\n" % i
        # Every worker and child is reaped once its session is over
        # (the last worker may still be exiting: wait for it, bounded).
        wait_until(lambda: not children_of(server.p.pid), what="workers reaped")
        assert children_of(server.p.pid) == []
        assert open_sockets(server.p.pid) == base
    finally:
        server.stop()


def test_sigterm_ends_workers_and_children():
    server, port = start_listener("-k", "-c", "echo ready; exec sleep 1000")
    s = connect(port)
    assert s.recv(100) == b"ready\n"
    workers = children_of(server.p.pid)
    assert len(workers) == 1
    grandchildren = children_of(workers[0])
    assert len(grandchildren) == 1
    server.p.terminate()
    assert server.wait() == 143
    # The worker and its `sleep` are gone (and reaped by their parents).
    for pid in workers + grandchildren:
        assert not os.path.exists(f"/proc/{pid}") or state(pid) == "Z"
    assert recv_all(s) == b""
    s.close()


def test_max_conns_limits_concurrent_children():
    server, port = start_listener("-k", "--max-conns", "1", "-c", "echo in; cat")
    try:
        first = connect(port)
        assert first.recv(100) == b"in\n"
        with connect(port) as second:
            assert recv_all(second) == b""  # refused: closed at once
        server.wait_stderr(r"new connection denied: connection limit reached \(1\)")
        first.shutdown(socket.SHUT_WR)
        assert recv_all(first) == b""
        first.close()
    finally:
        server.stop()


@pytest.mark.parametrize("argv, message", [
    (["-e", "/nonexistent"], "pync: exec /nonexistent: No such file or directory\n"),
    (["-e", "no-such-program-here"], "pync: exec no-such-program-here: command not found\n"),
])
def test_missing_program_fails_before_listening(argv, message):
    r = subprocess.run(pync_cmd("-l", *argv, "127.0.0.1", "0"), capture_output=True,
                       timeout=TIMEOUT)
    assert r.returncode == 1
    assert r.stderr.decode() == message


@pytest.mark.native_only
def test_exec_through_unix_socket(sock_dir):
    path = os.path.join(sock_dir, "s")
    server = Proc(pync_cmd("-lU", "-v", path, "-c", "tr a-z A-Z"))
    try:
        server.wait_stderr("Listening on ")
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(TIMEOUT)
            s.connect(path)
            s.sendall(b"unix\n")
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"UNIX\n"
        assert server.wait() == 0
    finally:
        server.kill()
    assert not os.path.exists(path)


def test_a_child_still_writing_gets_epipe_when_the_peer_leaves(tmp_path):
    """The peer closes while the child writes on: its stdout is closed first,
    so it ends of SIGPIPE at once (141), not terminated after the grace
    period (which would leave no status written), on either backend."""
    status = tmp_path / "status"
    server, port = start_listener("-c", f"yes; echo $? > {status}")
    with connect(port) as s:
        assert len(s.recv(100)) > 0
    assert server.wait() == 0
    wait_until(lambda: status.exists() and status.read_text().strip(), what="the status")
    assert status.read_text().strip() == "141"
