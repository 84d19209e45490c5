"""--ssl against the real tools: ncat, openssl s_server / s_client, curl.

Certificates are made here with trustme.  With PYNC_REQUIRE_INTEROP=1 (CI)
a missing tool fails the test.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from pynctest import TIMEOUT, Certs, Proc, free_port, run_pync, start_listener
from pynctest import require_tool as tool

pytestmark = pytest.mark.usefixtures("pync_backend")

trustme = pytest.importorskip("trustme")

PAYLOAD = os.urandom(256 * 1024) + b"\nend of pync's bytes\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(str(tmp_path_factory.mktemp("tls-peers")))


def verbose_tls(fp: str, alpn: str = "") -> str:
    """pync's -v line after a client handshake, as a regex."""
    extra = re.escape(f", ALPN {alpn}") if alpn else ""
    return r"\nTLS TLSv1\.3 [A-Z0-9_]+" + extra + re.escape(f", peer certificate {fp}") + r"\n"


# -- pync as the client -----------------------------------------------------------

def test_pync_client_to_ncat_ssl_listener(certs):
    ncat = tool("ncat")
    port = str(free_port())
    server = Proc([ncat, "-v", "-l", "--ssl", "--ssl-cert", certs.server_cert,
                   "--ssl-key", certs.server_key, "127.0.0.1", port])
    server.wait_stderr(r"Listening on 127\.0\.0\.1:")
    server.send(b"from ncat\n")  # stdin stays open: ncat ends when pync closes
    r = run_pync("-v", "-N", "--ssl", "--ssl-trustfile", certs.ca, "127.0.0.1", port,
                 input=PAYLOAD)
    assert server.wait() == 0
    assert (r.returncode, r.stdout) == (0, b"from ncat\n")
    assert re.search(verbose_tls(certs.server_fp), r.stderr.decode()), r.stderr
    assert bytes(server.out) == PAYLOAD


def _s_server(certs: Certs, *extra: str) -> tuple[Proc, str]:
    openssl = tool("openssl")
    server = Proc([openssl, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1",
                   "-cert", certs.server_cert, "-key", certs.server_key, *extra])
    port = server.wait_stdout(r"ACCEPT 127\.0\.0\.1:(\d+)\n").group(1).decode()
    return server, port


def test_pync_client_to_openssl_s_server(certs):
    server, port = _s_server(certs)
    server.send(b"from s_server\n")  # stdin stays open: s_server ends when pync closes
    r = run_pync("-v", "-N", "--ssl", "--ssl-trustfile", certs.ca, "127.0.0.1", port,
                 input=PAYLOAD)
    assert server.wait() == 0
    assert (r.returncode, r.stdout) == (0, b"from s_server\n")
    assert re.search(verbose_tls(certs.server_fp), r.stderr.decode()), r.stderr
    # s_server's stdout: its ACCEPT line, what it received, then its statistics
    out = bytes(server.out)
    assert out.count(PAYLOAD) == 1
    assert out.split(b"ACCEPT ", 1)[1].split(b"\n", 1)[1].startswith(PAYLOAD)


def test_pync_client_alpn_with_openssl_s_server(certs):
    server, port = _s_server(certs, "-alpn", "h2")
    r = run_pync("-v", "-N", "--ssl", "--ssl-trustfile", certs.ca, "--ssl-alpn", "h2,http/1.1",
                 "127.0.0.1", port, input=b"alpn\n")
    server.close_stdin()
    assert server.wait() == 0
    assert r.returncode == 0, r.stderr
    assert re.search(verbose_tls(certs.server_fp, "h2"), r.stderr.decode()), r.stderr


def test_pync_client_certificate_to_openssl_s_server(certs):
    server, port = _s_server(certs, "-Verify", "1", "-CAfile", certs.ca, "-verify_return_error")
    server.send(b"client verified\n")
    r = run_pync("-N", "--ssl", "--ssl-trustfile", certs.ca, "--ssl-cert", certs.client_cert,
                 "--ssl-key", certs.client_key, "127.0.0.1", port, input=b"with cert\n")
    assert server.wait() == 0
    assert (r.returncode, r.stdout, r.stderr) == (0, b"client verified\n", b"")
    assert b"with cert\n" in bytes(server.out)


def test_openssl_s_server_refuses_pync_without_certificate(certs):
    server, port = _s_server(certs, "-Verify", "1", "-CAfile", certs.ca, "-verify_return_error")
    r = run_pync("--ssl", "--ssl-trustfile", certs.ca, "127.0.0.1", port, input=b"no cert\n")
    server.close_stdin()
    server.wait()
    # TLS 1.3: the refusal comes after pync's handshake, as an alert
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == b"pync: TLS: tlsv13 alert certificate required\n"
    assert b"no cert" not in bytes(server.out)


def test_pync_client_refuses_openssl_s_server_of_unknown_ca(certs):
    server, port = _s_server(certs)
    r = run_pync("--ssl", "--ssl-trustfile", certs.other_ca, "127.0.0.1", port,
                 input=b"secret\n")
    server.close_stdin()
    server.wait()
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == (b"pync: TLS: certificate verify failed: "
                        b"unable to get local issuer certificate\n")
    assert b"secret" not in bytes(server.out)


# -- pync as the server --------------------------------------------------------------

def test_curl_against_pync_ssl_listener(certs):
    curl = tool("curl")
    body = b"hello over TLS from pync\n"
    response = (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)) + body
    listener, port = start_listener(*certs.server, "--ssl-alpn", "http/1.1")
    listener.send(response)
    listener.close_stdin()
    r = subprocess.run([curl, "-sS", "-v", "--max-time", "10", "--cacert", certs.ca,
                        "--resolve", f"localhost:{port}:127.0.0.1",
                        f"https://localhost:{port}/tls"], capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stdout == body
    assert re.search(rb"ALPN[:,] server accepted (to use )?http/1\.1", r.stderr), r.stderr
    assert listener.wait() == 0
    assert bytes(listener.out).startswith(b"GET /tls HTTP/1.1\r\nHost: localhost:%d\r\n" % port)
    assert bytes(listener.out).endswith(b"\r\n\r\n")
    assert re.search(r"\nTLS TLSv1\.3 [A-Z0-9_]+, ALPN http/1\.1\n",
                     bytes(listener.err).decode())


def test_curl_refuses_pync_without_ca(certs):
    curl = tool("curl")
    listener, port = start_listener(*certs.server, stdin=subprocess.DEVNULL)
    r = subprocess.run([curl, "-sS", "--max-time", "10",
                        "--resolve", f"localhost:{port}:127.0.0.1",
                        f"https://localhost:{port}/"], capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 60, r.stderr  # CURLE_PEER_FAILED_VERIFICATION
    assert listener.wait() == 1
    assert bytes(listener.err).endswith(b"pync: TLS: handshake failed: tlsv1 alert unknown ca\n")
    assert bytes(listener.out) == b""


def _s_client(certs: Certs, port: int, ca: str, data: bytes) -> subprocess.CompletedProcess:
    openssl = tool("openssl")
    return subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{port}",
                           "-CAfile", ca, "-verify_return_error",
                           "-servername", "localhost", "-verify_hostname", "localhost",
                           "-quiet"],
                          input=data, capture_output=True, timeout=TIMEOUT)


def test_openssl_s_client_against_pync_ssl_listener(certs):
    # The child answers only after it has read the client's line, then its
    # end makes pync send close_notify: s_client (-quiet ignores its own
    # stdin EOF) leaves when it sees it.
    listener, port = start_listener(*certs.server, "-c", 'read line; printf "got: %s\\n" "$line"',
                                    stdin=subprocess.DEVNULL)
    r = _s_client(certs, port, certs.ca, b"from s_client\n")
    assert listener.wait() == 0
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"got: from s_client\n"
    assert b"verify return:1" in r.stderr


def test_openssl_s_client_refuses_pync_of_unknown_ca(certs):
    listener, port = start_listener(*certs.server, stdin=subprocess.DEVNULL)
    r = _s_client(certs, port, certs.other_ca, b"secret\n")
    assert r.returncode == 1
    assert r.stdout == b""
    assert listener.wait() == 1
    assert bytes(listener.err).endswith(b"pync: TLS: handshake failed: tlsv1 alert unknown ca\n")
    assert bytes(listener.out) == b""


def test_ncat_ssl_client_against_pync_listener(certs):
    ncat = tool("ncat")
    # ncat half-closes at its stdin EOF; pync's listener ends there, and ncat
    # leaves when pync closes.
    listener, port = start_listener(*certs.server)
    listener.send(b"from pync server\n")
    listener.close_stdin()
    # ncat checks no IP address in a certificate: it verifies "localhost"
    r = subprocess.run([ncat, "--ssl-verify", "--ssl-trustfile", certs.ca,
                        "--ssl-servername", "localhost", "127.0.0.1", str(port)],
                       input=PAYLOAD, capture_output=True, timeout=TIMEOUT)
    assert listener.wait() == 0
    assert (r.returncode, r.stdout) == (0, b"from pync server\n")
    assert bytes(listener.out) == PAYLOAD
