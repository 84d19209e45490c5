"""Failures the system reports: one clear line each, exit 1, in nc's words.

Each case runs nc 1.219 and pync with the same arguments and compares the
status and stderr (``nc:`` read as ``pync:``).  Nothing leaves the machine:
names that fail are ones the resolver rejects without asking DNS (``-n``,
an empty label, a label over 63 bytes), the "unreachable" addresses are
multicast and broadcast ones that TCP refuses locally, and ports are held
bound (and not listening) by the test.

Permission denied without being non-root: the child process drops
CAP_NET_BIND_SERVICE, CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from its
bounding set before exec, so root's pync meets the same EACCES a user would
(a low port, a directory with mode 0).
"""

from __future__ import annotations

import ctypes
import io
import os
import socket
import subprocess

import pytest
from pynctest import TIMEOUT, Server, pync_cmd, require_tool

import pync

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_NET_BIND_SERVICE = 1, 2, 10
_libc = ctypes.CDLL(None, use_errno=True)


def _drop_caps() -> None:
    """preexec_fn: lose the capabilities that let root ignore permissions."""
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_NET_BIND_SERVICE):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            os._exit(99)


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """Ports and paths the cases name: {NAME} in their argv."""
    held_tcp = socket.socket()
    held_tcp.bind(("127.0.0.1", 0))
    held_tcp.listen(1)
    held_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held_udp.bind(("127.0.0.1", 0))
    closed = socket.socket()  # bound, never listening: refused
    closed.bind(("127.0.0.1", 0))
    d = tmp_path_factory.mktemp("err")
    locked = d / "locked"
    locked.mkdir(mode=0)
    low = _free_low_port()
    yield {
        "TCP_IN_USE": str(held_tcp.getsockname()[1]),
        "UDP_IN_USE": str(held_udp.getsockname()[1]),
        "CLOSED": str(closed.getsockname()[1]),
        "LOCKED": str(locked / "s"),
        "LOW": str(low),
        "LONG_PATH": str(d / ("y" * 120)),
    }
    for s in (held_tcp, held_udp, closed):
        s.close()
    locked.chmod(0o700)


def _free_low_port() -> int:
    """A privileged port nothing holds on 127.0.0.1 (EACCES comes first anyway)."""
    for port in range(1023, 600, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return 1023


def _fill(argv: list[str], places: dict[str, str]) -> list[str]:
    return [places.get(a, a) for a in argv]


def _both(argv: list[str], preexec=None, input: bytes = b"") -> tuple[tuple, tuple]:
    nc = require_tool("nc")
    results = []
    for cmd in ([nc], pync_cmd()):
        r = subprocess.run([*cmd, *argv], input=input, capture_output=True,
                           timeout=TIMEOUT, preexec_fn=preexec)
        text = r.stderr.decode(errors="replace")
        if cmd == [nc]:
            text = text.replace("nc: ", "pync: ")
        results.append((r.returncode, text))
    return results[0], results[1]


AGREE = [
    pytest.param(["-n", "localhost", "80"], id="dns-numeric-name"),
    pytest.param(["-v", "-4", "::1", "80"], id="dns-family-v4"),
    pytest.param(["-v", "-6", "127.0.0.1", "80"], id="dns-family-v6"),
    pytest.param(["-v", "224.0.0.1", "80"], id="unreachable-multicast"),
    pytest.param(["224.0.0.1", "80"], id="unreachable-silent-without-v"),
    pytest.param(["-zv", "255.255.255.255", "80"], id="unreachable-broadcast-scan"),
    pytest.param(["-u", "-v", "255.255.255.255", "9"], id="udp-broadcast-without-b"),
    pytest.param(["-v", "-s", "10.255.255.1", "127.0.0.1", "CLOSED"], id="source-not-local"),
    pytest.param(["-l", "10.255.255.1", "0"], id="listen-not-local"),
    pytest.param(["-l", "127.0.0.1", "TCP_IN_USE"], id="eaddrinuse-tcp"),
    pytest.param(["-lu", "127.0.0.1", "UDP_IN_USE"], id="eaddrinuse-udp"),
    pytest.param(["-v", "-s", "127.0.0.1", "-p", "TCP_IN_USE", "127.0.0.1", "CLOSED"],
                 id="eaddrinuse-source-port"),
    pytest.param(["-lU", "/nonexistent/dir/s"], id="unix-missing-dir"),
    pytest.param(["-U", "/nonexistent/dir/s"], id="unix-connect-missing"),
    pytest.param(["bad..name", "80"], id="dns-empty-label"),
    pytest.param(["a" * 64 + ".invalid", "80"], id="dns-label-over-63"),
    pytest.param(["-z", "bad..name", "80"], id="dns-empty-label-scan"),
    pytest.param(["-s", "bad..name", "127.0.0.1", "CLOSED"], id="dns-empty-label-source"),
    pytest.param(["-l", "bad..name", "0"], id="dns-empty-label-listen"),
    pytest.param(["-x", "bad..name:1080", "127.0.0.1", "80"], id="dns-empty-label-proxy"),
    pytest.param(["-lU", "LONG_PATH"], id="unix-listen-path-too-long"),
    pytest.param(["-U", "LONG_PATH"], id="unix-connect-path-too-long"),
]

@pytest.mark.parametrize("argv", AGREE)
def test_failure_reads_as_nc(argv, places):
    nc, mine = _both(_fill(argv, places), input=b"x\n")
    assert mine == nc
    assert mine[0] == 1
    assert mine[1].count("\n") <= 1  # one line (or none: refused without -v)


PERMISSION = [
    pytest.param(["-l", "127.0.0.1", "LOW"], id="listen-low-port"),
    pytest.param(["-lu", "127.0.0.1", "LOW"], id="listen-udp-low-port"),
    pytest.param(["-v", "-s", "127.0.0.1", "-p", "LOW", "127.0.0.1", "CLOSED"],
                 id="source-low-port"),
    pytest.param(["-lU", "LOCKED"], id="unix-listen-in-mode-0-dir"),
    pytest.param(["-lUu", "LOCKED"], id="unix-dgram-listen-in-mode-0-dir"),
    pytest.param(["-U", "LOCKED"], id="unix-connect-in-mode-0-dir"),
    pytest.param(["-Uu", "LOCKED"], id="unix-dgram-connect-in-mode-0-dir"),
]


@pytest.mark.parametrize("argv", PERMISSION)
def test_permission_denied_reads_as_nc(argv, places):
    probe = subprocess.run(["true"], preexec_fn=_drop_caps)
    if probe.returncode == 99:
        pytest.skip("cannot drop capabilities here (no CAP_SETPCAP)")
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        unprivileged_from = int(f.read())
    if "LOW" in argv and unprivileged_from <= int(places["LOW"]):
        pytest.skip("every port is unprivileged on this host")
    nc, mine = _both(_fill(argv, places), preexec=_drop_caps)
    assert mine == nc
    assert mine[0] == 1 and "Permission denied" in mine[1]
    assert mine[1].count("\n") == 1


# -- TLS option values that escape as tracebacks ---------------------------

def _tls_client(*extra: str) -> subprocess.CompletedProcess:
    srv = Server(lambda conn: conn.recv(65536))  # accepts; no TLS needed to fail
    r = subprocess.run(pync_cmd("-w", "2", "--ssl", *extra, "127.0.0.1", str(srv.port)),
                       capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    # If pync failed before connecting, this is the connection the server takes.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT):
        pass
    srv.join()
    return r


def _one_clean_line(r: subprocess.CompletedProcess) -> None:
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    assert r.returncode == 1
    assert r.stderr.startswith(b"pync: ") and r.stderr.count(b"\n") == 1, r.stderr


def test_non_ascii_alpn_is_one_line():
    _one_clean_line(_tls_client("--ssl-alpn", "\u00e9"))


def test_overlong_alpn_is_a_plain_message():
    r = _tls_client("--ssl-alpn", "x" * 300)
    _one_clean_line(r)
    assert b"('" not in r.stderr


@pytest.mark.parametrize("name", ["bad..name", ".lead", "a" * 64])
def test_unencodable_servername_is_one_line(name):
    _one_clean_line(_tls_client("--ssl-servername", name))


# -- the library: run() "never raises for bad input" ------------------------

def _run_in_process(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    status = pync.run(argv, stdin=b"", stdout=io.BytesIO(), stderr=err)
    return status, err.getvalue()


@pytest.mark.parametrize("argv", [
    ["--denyfile", "a\x00b", "127.0.0.1", "CLOSED"],
    ["--allowfile", "a\x00b", "-l", "127.0.0.1", "0"],
])
def test_nul_in_an_access_file_name_is_an_error(argv, places):
    status, err = _run_in_process(_fill(argv, places))
    assert status == 1 and err.startswith("pync: ") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [
    ["--ssl", "--ssl-ciphers", "a\x00b", "127.0.0.1", "CLOSED"],
    ["--ssl", "--ssl-cert", "a\x00b", "127.0.0.1", "CLOSED"],
    ["--ssl", "--ssl-trustfile", "a\x00b", "127.0.0.1", "CLOSED"],
], ids=["ciphers", "cert", "trustfile"])
def test_nul_in_a_tls_value_is_an_error_not_an_exception(argv, places):
    """Library only (argv from a shell cannot hold NUL): still one line."""
    status, err = _run_in_process(_fill(argv, places))
    assert status == 1 and err.startswith("pync: ")
