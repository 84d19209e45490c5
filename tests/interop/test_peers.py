"""pync against the real tools: OpenBSD nc, ncat, socat, curl, http.server.

With PYNC_REQUIRE_INTEROP=1 (CI) a missing tool fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pynctest import (
    TIMEOUT,
    Proc,
    free_port,
    pync_cmd,
    run_in_threads,
    run_pync,
    start_listener,
)
from pynctest import require_tool as tool

pytestmark = pytest.mark.usefixtures("pync_backend")

PAYLOAD = os.urandom(256 * 1024) + b"\nend\n"


def test_pync_client_to_nc_listener():
    nc = tool("nc")
    listener = Proc([nc, "-l", "-v", "-n", "127.0.0.1", "0"], stdin=subprocess.DEVNULL)
    port = listener.wait_stderr(r"Listening on \S+ (\d+)").group(1).decode()
    r = run_pync("-N", "127.0.0.1", port, input=PAYLOAD)
    assert listener.wait() == 0 and r.returncode == 0
    assert bytes(listener.out) == PAYLOAD


def test_pync_client_to_ncat_listener():
    ncat = tool("ncat")
    port = free_port()
    listener = Proc([ncat, "-v", "-l", "127.0.0.1", str(port)], stdin=subprocess.DEVNULL)
    listener.wait_stderr(r"Listening on")
    r = run_pync("-N", "127.0.0.1", str(port), input=PAYLOAD)
    assert listener.wait() == 0 and r.returncode == 0
    assert bytes(listener.out) == PAYLOAD


@pytest.mark.parametrize("peer, flags", [("nc", ["-N"]), ("ncat", [])])
def test_peer_client_to_pync_listener(peer, flags):
    path = tool(peer)
    listener, port = start_listener("-N")
    listener.send(b"greetings from pync\n")
    listener.close_stdin()
    r = subprocess.run([path, *flags, "127.0.0.1", str(port)], input=PAYLOAD,
                       capture_output=True, timeout=TIMEOUT)
    assert listener.wait() == 0 and r.returncode == 0
    assert bytes(listener.out) == PAYLOAD
    assert r.stdout == b"greetings from pync\n"


def test_socat_listens_pync_sends():
    socat = tool("socat")
    listener = Proc([socat, "-d", "-d", "-u", "TCP-LISTEN:0,bind=127.0.0.1,reuseaddr",
                     "STDOUT"], stdin=subprocess.DEVNULL)
    port = int(listener.wait_stderr(r"listening on AF=2 127\.0\.0\.1:(\d+)").group(1))
    r = run_pync("-N", "127.0.0.1", str(port), input=PAYLOAD)
    assert listener.wait() == 0 and r.returncode == 0
    assert bytes(listener.out) == PAYLOAD


@pytest.mark.native_only
def test_pync_listens_on_a_unix_socket_socat_sends(sock_dir):
    socat = tool("socat")
    path = os.path.join(sock_dir, "u")
    plistener = Proc(pync_cmd("-lU", "-v", path), stdin=subprocess.DEVNULL)
    plistener.wait_stderr("Listening on")
    s = subprocess.run([socat, "-u", "STDIN", f"UNIX-CONNECT:{path}"], input=PAYLOAD,
                       capture_output=True, timeout=TIMEOUT)
    assert plistener.wait() == 0 and s.returncode == 0
    assert bytes(plistener.out) == PAYLOAD


def test_curl_against_pync_listener():
    curl = tool("curl")
    body = b"hello from pync\n"
    response = (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)) + body
    listener, port = start_listener()
    listener.send(response)
    listener.close_stdin()
    r = subprocess.run([curl, "-sS", "--max-time", "10", f"http://127.0.0.1:{port}/x"],
                       capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stdout == body
    assert listener.wait() == 0
    assert bytes(listener.out).startswith(b"GET /x HTTP/1.1\r\n")


def test_http_get_by_hand_with_C(tmp_path):
    (tmp_path / "index.txt").write_bytes(b"served file\n")
    server = Proc([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
                  stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        port = server.wait_stdout(r"Serving HTTP on \S+ port (\d+)").group(1).decode()
        r = run_pync("-C", "127.0.0.1", port, input=b"GET /index.txt HTTP/1.0\n\n")
    finally:
        server.p.terminate()
        server.wait()
    assert r.returncode == 0
    assert r.stdout.startswith(b"HTTP/1.0 200 OK\r\n")
    assert r.stdout.endswith(b"\r\n\r\nserved file\n")


# -- same scenario, nc and pync side by side ------------------------------

BAD_ARGV = [
    ["localhost", "abc"], ["localhost", "99999"], ["localhost", "0"], ["localhost"],
    ["-l"], ["-z", "-l", "1234"], ["-k", "localhost", "1"], ["-w", "abc", "localhost", "1"],
    ["-i", "x", "localhost", "1"], ["-l", "-x", "1.2.3.4", "1234"],
    ["-T", "nosuchtos", "localhost", "1"], ["no-such-host.invalid", "80"], ["-Q"], ["-s"],
    [], ["-q", "x", "h", "1"], ["-W", "0", "h", "1"], ["-I", "0", "h", "1"],
    ["-O", "99999999999", "h", "1"], ["-M", "256", "h", "1"], ["-m", "x", "h", "1"],
    ["-V", "1", "h", "1"], ["-X", "9", "h", "1"], ["-lU"], ["-U", "a", "b"], ["-U"],
    ["-l", "-p", "1", "2"], ["-U", "-x", "1.2.3.4", "/tmp/x"], ["-T", "-1", "h", "1"],
    ["-v", "127.0.0.1", "1"], ["-v", "localhost", "1-2"], ["-w", "-1", "h", "1"],
]


@pytest.mark.parametrize("argv", BAD_ARGV, ids=lambda a: " ".join(a) or "(none)")
def test_same_errors_as_nc(argv):
    nc = tool("nc")
    want = subprocess.run(["nc", *argv], executable=nc, capture_output=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)  # argv[0] "nc"
    got = run_pync(*argv)
    expected = want.stderr.replace(b"nc: ", b"pync: ").replace(b"usage: nc ", b"usage: pync ")
    assert (got.returncode, got.stderr) == (want.returncode, expected)


@pytest.mark.parametrize("flags", [[], ["-N"], ["-q", "0"], ["-d"], ["-C"], ["-N", "-C"]],
                         ids=lambda f: " ".join(f) or "plain")
def test_same_session_as_nc(flags):
    """Server reads until EOF or 1.5 s of silence, replies, closes: compare."""
    nc = tool("nc")

    def scenario(cmd):
        import socket
        import threading

        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        seen = {}

        def serve():
            conn, _ = srv.accept()
            conn.settimeout(1.5)
            data = b""
            try:
                while True:
                    d = conn.recv(4096)
                    if not d:
                        seen["eof"] = True
                        break
                    data += d
            except socket.timeout:
                seen["eof"] = False
            seen["data"] = data
            conn.sendall(b"reply\r\n")
            conn.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        r = subprocess.run([*cmd, *flags, "127.0.0.1", str(srv.getsockname()[1])],
                           input=b"line one\nline two\n", capture_output=True,
                           timeout=TIMEOUT)
        t.join(TIMEOUT)
        srv.close()
        return r.returncode, r.stdout, r.stderr, seen

    # The two scenarios are independent (a server each): run them side by
    # side, so the 1.5 s of silence is waited once.
    pync_run, nc_run = run_in_threads([lambda: scenario(pync_cmd()), lambda: scenario([nc])])
    assert pync_run == nc_run
