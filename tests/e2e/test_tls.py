"""--ssl: pync against pync, with certificates made here by trustme.

A CA, a server certificate for 127.0.0.1 and localhost, a client
certificate.  Every test checks bytes, exit statuses and the exact words.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from pynctest import TIMEOUT, Certs, Proc, Server, connect, pync_cmd, run_pync, start_listener

pytestmark = pytest.mark.usefixtures("pync_backend")

trustme = pytest.importorskip("trustme")

BIG = 8 * 1024 * 1024
SHORT_WAIT = 4.0  # for things that happen at once, or never


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(str(tmp_path_factory.mktemp("tls")))


def tls_line(fp: str = "", alpn: str = "") -> str:
    """The -v line after a handshake, as a regex."""
    text = r"TLS TLSv1\.3 [A-Z0-9_]+"
    if alpn:
        text += re.escape(f", ALPN {alpn}")
    if fp:
        text += re.escape(f", peer certificate {fp}")
    return text + r"\n"


# -- data -------------------------------------------------------------------

def test_bytes_both_ways_exact(certs):
    to_server = bytes(range(256)) * 64 + b"\r\n\x00end of client\n"
    to_client = bytes(reversed(range(256))) * 32 + b"\x00end of server"
    listener, port = start_listener(*certs.server)
    listener.send(to_client)
    listener.close_stdin()
    r = run_pync("-v", "-N", *certs.client, "127.0.0.1", str(port), input=to_server)
    assert listener.wait() == 0
    assert (r.returncode, r.stdout) == (0, to_client)
    assert bytes(listener.out) == to_server
    assert re.fullmatch(r"Connection to 127\.0\.0\.1 \d+ port \[tcp/\*\] succeeded!\n"
                        + tls_line(certs.server_fp), r.stderr.decode()), r.stderr
    # no client certificate: the server's line names none
    assert re.fullmatch(r"Listening on 127\.0\.0\.1 \d+\nConnection received on "
                        r"127\.0\.0\.1 \d+\n" + tls_line(), bytes(listener.err).decode())


def test_quiet_without_v(certs):
    listener, port = start_listener(*certs.server, stdin=subprocess.DEVNULL)
    r = run_pync("-N", *certs.client, "127.0.0.1", str(port), input=b"quiet\n")
    assert listener.wait() == 0
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    assert bytes(listener.out) == b"quiet\n"


def test_large_upload_half_close_and_answer(certs):
    """-N: close_notify then FIN; the exec child sees EOF and still answers."""
    data = os.urandom(BIG)
    listener, port = start_listener(
        *certs.server, "-c", 'printf "%s\\n" "$PYNC_REMOTE_ADDR"; sha256sum',
        stdin=subprocess.DEVNULL)
    r = run_pync("-N", *certs.client, "127.0.0.1", str(port), input=data)
    assert listener.wait() == 0
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"127.0.0.1\n" + hashlib.sha256(data).hexdigest().encode() + b"  -\n"
    assert r.stderr == b""


def test_large_download(certs, tmp_path):
    data = os.urandom(BIG)
    src = tmp_path / "down.bin"
    src.write_bytes(data)
    with open(src, "rb") as f:
        listener, port = start_listener("-N", *certs.server, stdin=f)
    r = run_pync("-d", *certs.client, "127.0.0.1", str(port))
    assert listener.wait() == 0
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == BIG
    assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(data).digest()


def test_half_close_keeps_what_the_server_sent_first(certs):
    """Data already on its way when -N sends close_notify is not lost.

    The server sends at once; the client's stdin is already at EOF, so its
    close_notify goes out while the server's bytes are arriving.
    """
    for _ in range(5):
        listener, port = start_listener(*certs.server)
        listener.send(b"from server\n")
        listener.close_stdin()
        r = run_pync("-N", *certs.client, "127.0.0.1", str(port), input=b"from client\n")
        assert listener.wait() == 0
        assert (r.returncode, r.stdout, r.stderr) == (0, b"from server\n", b"")
        assert bytes(listener.out) == b"from client\n"


# -- verification -------------------------------------------------------------

def test_verify_by_default_refuses_unknown_ca(certs):
    listener, port = start_listener(*certs.server, stdin=subprocess.DEVNULL)
    r = run_pync("--ssl", "127.0.0.1", str(port), input=b"secret\n")
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == (b"pync: TLS: certificate verify failed: "
                        b"unable to get local issuer certificate\n")
    assert listener.wait() == 1
    assert bytes(listener.out) == b""
    assert bytes(listener.err).endswith(b"pync: TLS: handshake failed: tlsv1 alert unknown ca\n")


def test_host_name_mismatch_refused(certs):
    listener, port = start_listener(*certs.server, stdin=subprocess.DEVNULL)
    r = run_pync(*certs.client, "--ssl-servername", "wrong.example",
                 "127.0.0.1", str(port), input=b"secret\n")
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == (b"pync: TLS: certificate verify failed: Hostname mismatch, "
                        b"certificate is not valid for 'wrong.example'.\n")
    assert listener.wait() == 1
    assert bytes(listener.out) == b""


def test_servername_that_matches(certs):
    listener, port = start_listener(*certs.server, stdin=subprocess.DEVNULL)
    r = run_pync("-N", *certs.client, "--ssl-servername", "localhost",
                 "127.0.0.1", str(port), input=b"by name\n")
    assert listener.wait() == 0
    assert (r.returncode, r.stderr) == (0, b"")
    assert bytes(listener.out) == b"by name\n"


def test_insecure_connects_and_warns(certs):
    listener, port = start_listener(*certs.server)
    listener.send(b"unverified hello\n")
    listener.close_stdin()
    r = run_pync("-N", "--ssl-insecure", "127.0.0.1", str(port), input=b"ok\n")
    assert listener.wait() == 0
    assert (r.returncode, r.stdout) == (0, b"unverified hello\n")
    assert r.stderr == b"pync: warning: --ssl-insecure: the server's certificate is not verified\n"
    assert bytes(listener.out) == b"ok\n"


@pytest.mark.parametrize("prefix", [("--ssl",), ()], ids=["with --ssl", "--ssl-pin alone"])
def test_right_pin_without_trustfile(certs, prefix):
    listener, port = start_listener(*certs.server)
    listener.send(b"pinned\n")
    listener.close_stdin()
    r = run_pync("-N", *prefix, "--ssl-pin", certs.server_fp, "127.0.0.1", str(port),
                 input=b"hi\n", timeout=SHORT_WAIT)
    assert listener.wait() == 0
    assert (r.returncode, r.stdout, r.stderr) == (0, b"pinned\n", b"")
    assert bytes(listener.out) == b"hi\n"


def test_pin_with_colons_and_capitals(certs):
    hexdigits = certs.server_fp.split(":", 1)[1].upper()
    pin = "SHA256:" + ":".join(hexdigits[i:i + 2] for i in range(0, 64, 2))
    listener, port = start_listener(*certs.server, stdin=subprocess.DEVNULL)
    r = run_pync("-N", "--ssl", "--ssl-pin", pin, "127.0.0.1", str(port), input=b"x\n")
    assert listener.wait() == 0
    assert (r.returncode, r.stderr) == (0, b"")
    assert bytes(listener.out) == b"x\n"


@pytest.mark.parametrize("prefix", [("--ssl",), ()], ids=["with --ssl", "--ssl-pin alone"])
def test_wrong_pin_refused(certs, prefix):
    listener, port = start_listener(*certs.server, stdin=subprocess.DEVNULL)
    r = run_pync(*prefix, "--ssl-pin", "sha256:" + "00" * 32, "127.0.0.1", str(port),
                 input=b"secret\n", timeout=SHORT_WAIT)
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == (b"pync: TLS: certificate does not match --ssl-pin (got "
                        + certs.server_fp.encode() + b")\n")
    listener.wait()
    assert bytes(listener.out) == b""  # nothing was sent to an unpinned server


def test_handshake_bounded_by_w():
    """A server that accepts and never answers: -w 1 ends the handshake."""
    hello = bytearray()

    def silent(conn: socket.socket) -> None:
        while True:  # the ClientHello, then the client's close
            chunk = conn.recv(65536)
            if not chunk:
                return
            hello.extend(chunk)

    server = Server(silent)
    r = run_pync("-w", "1", "--ssl-insecure", "127.0.0.1", str(server.port), input=b"x\n")
    server.join()
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == (b"pync: warning: --ssl-insecure: the server's certificate is not verified\n"
                        b"pync: TLS: handshake timed out\n")
    assert hello[:1] == b"\x16"  # a handshake record was sent, and nothing else
    assert b"x\n" not in hello


# -- the server's temporary certificate ------------------------------------------

def test_temporary_certificate_can_be_pinned():
    """-k: the fingerprint shown is the one every client sees, and pins."""
    listener, port = start_listener("-k", "--ssl", stdin=subprocess.DEVNULL)
    try:
        first = run_pync("-v", "-N", "--ssl-insecure", "127.0.0.1", str(port), input=b"one\n")
        assert first.returncode == 0, first.stderr
        fp = listener.wait_stderr(
            r"TLS certificate \(temporary, self-signed\): (sha256:[0-9a-f]{64})\n").group(1)
        assert re.search(tls_line(fp.decode()), first.stderr.decode()), first.stderr
        listener.wait_stdout("one\n")
        second = run_pync("-N", "--ssl", "--ssl-pin", fp.decode(), "127.0.0.1", str(port),
                          input=b"two\n")
        assert (second.returncode, second.stderr) == (0, b"")
        listener.wait_stdout("one\ntwo\n")
    finally:
        listener.stop()
    assert bytes(listener.out) == b"one\ntwo\n"
    assert len(re.findall(rb"TLS certificate \(temporary", bytes(listener.err))) == 1


def test_temporary_certificate_is_one_for_all_exec_sessions():
    """-k -c: sessions run in workers of their own (forked, or spawned on the
    portable backend, which are handed the certificate), but under one."""
    listener, port = start_listener("-k", "--ssl", "-c", "cat", stdin=subprocess.DEVNULL)
    seen = []
    try:
        for word in (b"one\n", b"two\n"):
            r = run_pync("-v", "-N", "--ssl-insecure", "127.0.0.1", str(port), input=word)
            assert (r.returncode, r.stdout) == (0, word), r.stderr
            seen.append(re.search(r"peer certificate (sha256:[0-9a-f]{64})\n",
                                  r.stderr.decode()).group(1))
    finally:
        listener.stop()
    assert seen[0] == seen[1]


def test_temporary_certificate_shown_before_any_client():
    """A client can only pin what it was shown before connecting."""
    listener, _ = start_listener("--ssl", stdin=subprocess.DEVNULL)
    try:
        m = listener.wait_stderr(
            r"TLS certificate \(temporary, self-signed\): (sha256:[0-9a-f]{64})\n",
            timeout=SHORT_WAIT)
    finally:
        listener.kill()
    assert b"Connection received" not in bytes(listener.err[:m.end()])


def _without_cryptography(tmp_path: Path) -> dict:
    shim = tmp_path / "shim" / "cryptography"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('cryptography hidden by the test')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(shim.parent), env.get("PYTHONPATH")) if p)
    return env


NO_CRYPTOGRAPHY = (b"pync: TLS: -l --ssl needs --ssl-cert and --ssl-key, or the cryptography "
                   b"package to make a temporary certificate (pip install 'pync[tls]')\n")


def test_without_cryptography_a_client_gets_the_message(tmp_path):
    proc = Proc(pync_cmd("-l", "-v", "-n", "--ssl", "127.0.0.1", "0"),
                stdin=subprocess.DEVNULL, env=_without_cryptography(tmp_path))
    m = proc.wait_stderr(r"Listening on \S+ (\d+)\n|pync: TLS: .*\n")
    if m.group(1):  # the context is made at the first connection: give it one
        with connect(int(m.group(1))) as s:
            assert proc.wait() == 1
            s.settimeout(SHORT_WAIT)
            assert s.recv(100) == b""
    assert proc.wait() == 1
    assert bytes(proc.err).endswith(NO_CRYPTOGRAPHY)
    assert b"Traceback" not in bytes(proc.err)


def test_without_cryptography_fails_before_listening(tmp_path):
    r = subprocess.run(pync_cmd("-l", "--ssl", "127.0.0.1", "0"), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=SHORT_WAIT,
                       env=_without_cryptography(tmp_path))
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", NO_CRYPTOGRAPHY)


def test_missing_certificate_file_fails_before_listening(tmp_path):
    missing = str(tmp_path / "missing.pem")
    r = subprocess.run(pync_cmd("-l", "--ssl", "--ssl-cert", missing, "--ssl-key", missing,
                                "127.0.0.1", "0"), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=SHORT_WAIT)
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == (f"pync: TLS: cannot load certificate {missing}: "
                        "No such file or directory\n").encode()


# -- client certificates -----------------------------------------------------------

def test_client_certificate_required_and_missing(certs):
    listener, port = start_listener(*certs.server, "--ssl-verify", "--ssl-trustfile", certs.ca,
                                    stdin=subprocess.DEVNULL)
    r = run_pync(*certs.client, "127.0.0.1", str(port), input=b"no cert\n")
    assert listener.wait() == 1
    assert bytes(listener.err).endswith(
        b"pync: TLS: handshake failed: peer did not return a certificate\n")
    assert bytes(listener.out) == b""
    # TLS 1.3: the client's handshake is over when the server refuses it
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == b"pync: TLS: tlsv13 alert certificate required\n"


def test_client_certificate_accepted(certs):
    listener, port = start_listener(*certs.server, "--ssl-verify", "--ssl-trustfile", certs.ca)
    listener.send(b"welcome, client\n")
    listener.close_stdin()
    r = run_pync("-N", *certs.client, "--ssl-cert", certs.client_cert,
                 "--ssl-key", certs.client_key, "127.0.0.1", str(port), input=b"with cert\n")
    assert listener.wait() == 0
    assert (r.returncode, r.stdout, r.stderr) == (0, b"welcome, client\n", b"")
    assert bytes(listener.out) == b"with cert\n"
    client_der = ssl.PEM_cert_to_DER_cert(Path(certs.client_cert).read_text())
    client_fp = "sha256:" + hashlib.sha256(client_der).hexdigest()
    assert re.search(tls_line(client_fp), bytes(listener.err).decode())


def test_client_certificate_from_another_ca(certs, tmp_path):
    other = trustme.CA().issue_cert("client.example")
    other.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    other.private_key_pem.write_to_path(str(tmp_path / "c.key"))
    listener, port = start_listener(*certs.server, "--ssl-verify", "--ssl-trustfile", certs.ca,
                                    stdin=subprocess.DEVNULL)
    r = run_pync(*certs.client, "--ssl-cert", str(tmp_path / "c.pem"),
                 "--ssl-key", str(tmp_path / "c.key"), "127.0.0.1", str(port), input=b"x\n")
    assert listener.wait() == 1
    assert bytes(listener.err).endswith(
        b"pync: TLS: certificate verify failed: unable to get local issuer certificate\n")
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == b"pync: TLS: tlsv1 alert unknown ca\n"


# -- ALPN ------------------------------------------------------------------------------

@pytest.mark.parametrize("server, client, agreed", [
    ("h2,http/1.1", "h2,http/1.1", "h2"),
    ("h2,http/1.1", "http/1.1", "http/1.1"),
    (None, "h2,http/1.1", ""),
])
def test_alpn(certs, server, client, agreed):
    extra = ("--ssl-alpn", server) if server else ()
    listener, port = start_listener(*certs.server, *extra, stdin=subprocess.DEVNULL)
    r = run_pync("-v", "-N", *certs.client, "--ssl-alpn", client, "127.0.0.1", str(port),
                 input=b"alpn\n")
    assert listener.wait() == 0
    assert r.returncode == 0, r.stderr
    assert re.search("\n" + tls_line(certs.server_fp, agreed), r.stderr.decode()), r.stderr
    assert re.search("\n" + tls_line("", agreed), bytes(listener.err).decode())
    assert bytes(listener.out) == b"alpn\n"


# -- a -k listener and a client that does not speak TLS ----------------------------------

def test_keep_open_listener_survives_plain_tcp_client(certs):
    listener, port = start_listener("-k", *certs.server, stdin=subprocess.DEVNULL)
    try:
        with connect(port) as s:
            s.sendall(b"hello\n")
            s.settimeout(TIMEOUT)
            reply = b""
            while True:  # the server's alert, then its close
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply[:1] in (b"", b"\x15")  # nothing, or a TLS alert record
        listener.wait_stderr(r"pync: TLS: handshake failed: [^\n]+\n")
        assert listener.running()
        r = run_pync("-N", *certs.client, "127.0.0.1", str(port), input=b"proper client\n")
        assert (r.returncode, r.stderr) == (0, b"")
        listener.wait_stdout("proper client\n")
        assert listener.running()
    finally:
        listener.stop()
    assert bytes(listener.out) == b"proper client\n"
    err = bytes(listener.err).decode()
    assert re.fullmatch(
        r"Listening on 127\.0\.0\.1 \d+\n"
        r"Connection received on 127\.0\.0\.1 \d+\n"
        r"pync: TLS: handshake failed: wrong version number\n"
        r"Connection received on 127\.0\.0\.1 \d+\n" + tls_line(), err), err


def test_keep_open_listener_survives_silent_close(certs):
    """A client that connects and closes at once: reported, then the next is served."""
    listener, port = start_listener("-k", *certs.server, stdin=subprocess.DEVNULL)
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        s.close()
        listener.wait_stderr(
            r"pync: TLS: the peer closed the connection during the handshake\n")
        r = run_pync("-N", *certs.client, "127.0.0.1", str(port), input=b"next\n")
        assert (r.returncode, r.stderr) == (0, b"")
        listener.wait_stdout("next\n")
    finally:
        listener.stop()
    assert bytes(listener.out) == b"next\n"
