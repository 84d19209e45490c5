"""Socket options reach the socket; listen addresses from -s/-p; names under -v."""

from __future__ import annotations

import io
import socket
import subprocess

from pynctest import Proc, pync_cmd, recv_all, run_pync

from pync.base.report import Reporter
from pync.cli.parse import parse
from pync.modes.connect import open_connection


def test_options_are_set_on_the_connecting_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    opts = parse(["-b", "-I", "131072", "-O", "65536", "-T", "lowdelay", "-M", "7",
                  "-m", "3", "-n", "127.0.0.1", str(port)])
    opened = open_connection(opts, "127.0.0.1", port, Reporter(io.StringIO()))
    assert opened is not None
    sock, ip = opened
    try:
        assert ip == "127.0.0.1"
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 131072
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 65536
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0x10
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 7
        assert sock.getsockopt(socket.IPPROTO_IP, 21) == 3  # IP_MINTTL
    finally:
        sock.close()
        server.close()


def test_listen_with_s_and_p_and_names_resolved_without_n():
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    listener = Proc(pync_cmd("-l", "-v", "-s", "127.0.0.1", "-p", str(port)),
                    stdin=subprocess.DEVNULL)
    listener.wait_stderr(rf"Listening on localhost {port}\n")  # 127.0.0.1 reverse-resolved
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        cport = c.getsockname()[1]
        c.sendall(b"hi\n")
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b""
    assert listener.wait() == 0
    assert bytes(listener.err).decode().splitlines() == [
        f"Listening on localhost {port}", f"Connection received on localhost {cport}"]
    assert bytes(listener.out) == b"hi\n"


def test_connect_names_host_and_service_under_v():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    r = run_pync("-v", "-d", "-w", "1", "localhost", str(port))
    server.close()
    assert r.returncode == 0
    want = f"Connection to localhost (127.0.0.1) {port} port [tcp/*] succeeded!\n"
    assert r.stderr == want.encode()
