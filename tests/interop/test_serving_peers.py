"""The forwarder (-L) and the proxy server (-l -X) with real clients and servers:
curl, OpenBSD nc, ncat, openssl s_client, microsocks, python -m http.server.

With PYNC_REQUIRE_INTEROP=1 (CI) a missing tool fails the test.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from pynctest import TIMEOUT, Certs, Proc, free_port, pync_cmd, run_in_threads
from pynctest import require_tool as tool

pytestmark = pytest.mark.usefixtures("pync_backend")
MiB = 1024 * 1024
BODY = b"served through pync\n" * 100


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """python -m http.server on 127.0.0.1, serving index.txt."""
    root = tmp_path_factory.mktemp("web")
    (root / "index.txt").write_bytes(BODY)
    server = Proc([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
                  stdin=subprocess.DEVNULL, cwd=root)
    port = int(server.wait_stdout(r"Serving HTTP on \S+ port (\d+)").group(1))
    yield port
    server.p.terminate()
    server.wait()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(str(tmp_path_factory.mktemp("tls")))


def start(*args: str) -> tuple[Proc, int]:
    """``pync -v ARGS`` (a proxy resolves the names it is asked for: no -n)."""
    proc = Proc(pync_cmd("-v", *args), stdin=subprocess.DEVNULL)
    return proc, int(proc.wait_stderr(r"Listening on \S+ (\d+)\n").group(1))


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("curl"), "-sS", "--max-time", "10", *args],
                          capture_output=True, timeout=TIMEOUT)


# -- the forwarder -----------------------------------------------------------------

def test_twenty_curls_at_once_through_the_forwarder(web):
    fwd, port = start("-L", "127.0.0.1:0", "127.0.0.1", str(web))
    try:
        results = run_in_threads([lambda: curl(f"http://127.0.0.1:{port}/index.txt")
                                  for _ in range(20)], width=20)
    finally:
        fwd.stop()
    assert [(r.returncode, r.stdout) for r in results] == [(0, BODY)] * 20


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    data = os.urandom(64 * MiB)
    path = tmp_path_factory.mktemp("blob") / "blob"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("way", ["client to server", "server to client"])
def test_64_mib_between_two_ncs(blob, tmp_path, way):
    nc = tool("nc")
    path, digest = blob
    port = free_port()
    received = tmp_path / "received"
    with open(path, "rb") as src, open(received, "wb") as sink:
        if way == "client to server":
            server = subprocess.Popen([nc, "-l", "127.0.0.1", str(port)], stdout=sink,
                                      stdin=subprocess.DEVNULL)
        else:
            server = subprocess.Popen([nc, "-N", "-l", "127.0.0.1", str(port)], stdin=src,
                                      stdout=subprocess.DEVNULL)
        fwd, fport = start("-L", "127.0.0.1:0", "127.0.0.1", str(port))
        try:
            _wait_listening(port)
            if way == "client to server":
                client = subprocess.run([nc, "-N", "127.0.0.1", str(fport)], stdin=src,
                                        timeout=TIMEOUT * 3)
            else:
                client = subprocess.run([nc, "127.0.0.1", str(fport)], stdout=sink,
                                        stdin=subprocess.DEVNULL, timeout=TIMEOUT * 3)
            assert client.returncode == 0
            assert server.wait(TIMEOUT) == 0
        finally:
            fwd.stop()
            if server.poll() is None:
                server.kill()
    assert hashlib.sha256(received.read_bytes()).hexdigest() == digest


def _wait_listening(port: int) -> None:
    """nc -l cannot listen on port 0: wait (bounded) until it listens, from /proc."""
    from pynctest import wait_until

    def listening() -> bool:
        with open("/proc/net/tcp") as f:
            return any(line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
                       for line in f.readlines()[1:])
    wait_until(listening, what=f"a listener on {port}")


def test_tls_termination_with_curl_and_openssl(web, certs):
    fwd, port = start(*certs.server, "-L", "127.0.0.1:0", "127.0.0.1", str(web))
    try:
        r = curl("--cacert", certs.ca, f"https://localhost:{port}/index.txt")
        assert (r.returncode, r.stdout) == (0, BODY), r.stderr
        s = subprocess.run([tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}",
                            "-CAfile", certs.ca, "-verify_return_error", "-quiet",
                            "-servername", "localhost"],
                           input=b"GET /index.txt HTTP/1.0\r\n\r\n", capture_output=True,
                           timeout=TIMEOUT)
        assert s.returncode == 0, s.stderr
        assert s.stdout.endswith(BODY)
    finally:
        fwd.stop()


def test_tls_termination_with_a_temporary_certificate(web):
    fwd, port = start("--ssl", "-L", "127.0.0.1:0", "127.0.0.1", str(web))
    try:
        fwd.wait_stderr(r"TLS certificate \(temporary, self-signed\): sha256:[0-9a-f]{64}\n")
        r = curl("-k", f"https://127.0.0.1:{port}/index.txt")
        assert (r.returncode, r.stdout) == (0, BODY), r.stderr
    finally:
        fwd.stop()


def test_the_outbound_leg_through_a_socks5_proxy(web):
    port = free_port()
    socks = Proc([tool("microsocks"), "-i", "127.0.0.1", "-p", str(port)],
                 stdin=subprocess.DEVNULL)
    try:
        _wait_listening(port)
        fwd, fport = start("-x", f"127.0.0.1:{port}", "-L", "127.0.0.1:0", "127.0.0.1", str(web))
        try:
            r = curl(f"http://127.0.0.1:{fport}/index.txt")
            assert (r.returncode, r.stdout) == (0, BODY), r.stderr
        finally:
            fwd.stop()
    finally:
        socks.p.terminate()
        socks.wait()


# -- the proxy server --------------------------------------------------------------

def test_curl_get_and_connect_through_the_http_proxy(web):
    proxy, port = start("-l", "-X", "connect", "127.0.0.1", "0")
    try:
        url = f"http://127.0.0.1:{web}/index.txt"
        get = curl("-x", f"http://127.0.0.1:{port}", url)
        tunnel = curl("-p", "-x", f"http://127.0.0.1:{port}", url)
    finally:
        proxy.stop()
    assert (get.returncode, get.stdout) == (0, BODY), get.stderr
    assert (tunnel.returncode, tunnel.stdout) == (0, BODY), tunnel.stderr


def test_curl_with_and_without_the_http_proxys_password(web):
    proxy, port = start("-l", "-vv", "-X", "http", "--proxy-auth", "alice:s3cret",
                        "127.0.0.1", "0")
    try:
        url = f"http://127.0.0.1:{web}/index.txt"
        ok = curl("-x", f"http://alice:s3cret@127.0.0.1:{port}", url)
        wrong = curl("-x", f"http://alice:nope@127.0.0.1:{port}", "-o", os.devnull,
                     "-w", "%{http_code}", url)
    finally:
        proxy.stop()
    assert (ok.returncode, ok.stdout) == (0, BODY), ok.stderr
    assert wrong.stdout == b"407"
    assert b"s3cret" not in bytes(proxy.err) and b"nope" not in bytes(proxy.err)


@pytest.mark.parametrize("flag, kind", [("--socks5-hostname", "5"), ("--socks5", "5"),
                                        ("--socks4a", "4"), ("--socks4", "4")])
def test_curl_through_the_socks_proxy(web, flag, kind):
    proxy, port = start("-l", "-X", kind, "127.0.0.1", "0")
    try:
        r = curl(flag, f"127.0.0.1:{port}", f"http://localhost:{web}/index.txt")
    finally:
        proxy.stop()
    assert (r.returncode, r.stdout) == (0, BODY), r.stderr


def test_curl_with_a_wrong_socks5_password_is_refused(web):
    proxy, port = start("-l", "-X", "5", "--proxy-auth", "alice:s3cret", "127.0.0.1", "0")
    try:
        ok = curl("--socks5-hostname", f"alice:s3cret@127.0.0.1:{port}",
                  f"http://localhost:{web}/index.txt")
        wrong = curl("--socks5-hostname", f"alice:nope@127.0.0.1:{port}",
                     f"http://localhost:{web}/index.txt")
    finally:
        proxy.stop()
    assert (ok.returncode, ok.stdout) == (0, BODY), ok.stderr
    assert wrong.returncode != 0 and wrong.stdout == b""


@pytest.mark.parametrize("kind", ["socks5", "http"])
def test_ncat_as_the_client(web, kind):
    proxy, port = start("-l", "-X", "5" if kind == "socks5" else "connect", "127.0.0.1", "0")
    try:
        r = subprocess.run([tool("ncat"), "--proxy", f"127.0.0.1:{port}", "--proxy-type", kind,
                            "127.0.0.1", str(web)],
                           input=b"GET /index.txt HTTP/1.0\r\n\r\n", capture_output=True,
                           timeout=TIMEOUT)
    finally:
        proxy.stop()
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"HTTP/1.0 200 ") and r.stdout.endswith(BODY)
