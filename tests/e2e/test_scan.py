"""-z scanning: nc's messages, in the order given, concurrent, honest UDP."""

from __future__ import annotations

import random
import socket
import subprocess
import threading
import time
from typing import Optional

import pytest
from pynctest import TIMEOUT, filtered_port, needs_proc, require_tool, run_pync

pytestmark = pytest.mark.usefixtures("pync_backend")


class Ports:
    """Open, closed and filtered TCP ports on 127.0.0.1, made by the test."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []

    def open(self, within: Optional[range] = None) -> int:
        """A listening port: kernel-chosen, or a free one in ``within``."""
        candidates = [0] if within is None else random.sample(within, min(len(within), 200))
        for port in candidates:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            s.listen(64)
            self.socks.append(s)
            return s.getsockname()[1]
        raise AssertionError(f"no free port in {within}")

    def closed(self) -> int:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))  # bound, never listening: RST
        self.socks.append(s)
        return s.getsockname()[1]

    def filtered(self) -> int:
        return filtered_port(self.socks)

    def close(self) -> None:
        for s in self.socks:
            s.close()


@pytest.fixture
def ports():
    p = Ports()
    yield p
    p.close()


def test_mixed_ports_in_order_with_nc_messages(ports):
    o1, c1, f1, o2, c2, f2 = (ports.open(), ports.closed(), ports.filtered(),
                              ports.open(), ports.closed(), ports.filtered())
    started = time.monotonic()
    r = run_pync("-z", "-v", "-n", "-w", "1", "127.0.0.1", *map(str, (o1, c1, f1, o2, c2, f2)))
    elapsed = time.monotonic() - started
    assert r.returncode == 0
    assert r.stdout == b""
    assert r.stderr.decode().splitlines() == [
        f"Connection to 127.0.0.1 {o1} port [tcp/*] succeeded!",
        f"pync: connect to 127.0.0.1 port {c1} (tcp) failed: Connection refused",
        f"pync: connect to 127.0.0.1 port {f1} (tcp) timed out: Operation now in progress",
        f"Connection to 127.0.0.1 {o2} port [tcp/*] succeeded!",
        f"pync: connect to 127.0.0.1 port {c2} (tcp) failed: Connection refused",
        f"pync: connect to 127.0.0.1 port {f2} (tcp) timed out: Operation now in progress",
    ]
    # Both filtered ports waited out their -w 1 together, not one after the other
    # (a generous bound: this is about concurrency, not speed).
    assert elapsed < 1.9 + 1.5


def test_exit_status_and_silence_without_v(ports):
    closed = ports.closed()
    r = run_pync("-z", "127.0.0.1", str(closed))
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"")
    r = run_pync("-z", "127.0.0.1", str(closed), str(ports.open()))
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def test_ranges_and_randomized_order(ports):
    base = ports.open()
    r = run_pync("-z", "-v", "-n", "-r", "127.0.0.1", f"{base}-{base + 20}")
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 21
    assert {int(line.split()[3] if line.startswith("Connection") else line.split()[5])
            for line in lines} == set(range(base, base + 21))
    assert f"Connection to 127.0.0.1 {base} port [tcp/*] succeeded!" in lines


def test_interval_makes_it_sequential(ports):
    a, b = ports.open(), ports.open()
    started = time.monotonic()
    r = run_pync("-z", "-v", "-n", "-i", "1", "127.0.0.1", str(a), str(b))
    assert r.returncode == 0
    assert time.monotonic() - started >= 1.0  # one interval between the probes


def _listening_ports() -> set[int]:
    """TCP ports in LISTEN state on this machine (from /proc/net/tcp)."""
    found = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[3] == "0A":
                found.add(int(cols[1].rsplit(":", 1)[1], 16))
    return found


@needs_proc
def test_long_range_matches_nc_line_for_line(ports):
    """Over 4096 ports the scan is split between processes: nc's output exactly.

    nc, probing one port at a time, can connect a probe to itself when its
    ephemeral port is the port probed (and report a false "succeeded");
    pync recognises that.  So both are compared with what really listens.
    """
    nc = require_tool("nc")
    # Below the ephemeral range: no probe's own source port can be a port
    # probed, so no probe can connect to itself or to another probe.
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        first_ephemeral = int(f.read().split()[0])
    hi = first_ephemeral - 1
    lo = max(1025, hi - 5000)
    opened = [ports.open(within=range(lo, hi + 1)) for _ in range(3)]
    args = ["-z", "-v", "-n", "-w", "2", "127.0.0.1", f"{lo}-{hi}"]
    before = _listening_ports()
    got = run_pync(*args, timeout=TIMEOUT * 3)
    want = subprocess.run(["nc", *args], executable=nc, capture_output=True,
                          timeout=TIMEOUT * 3)
    listening = _listening_ports()
    # A listener of some other process that came or went during the scans
    # (the range spans ephemeral ports) may be seen either way.
    moving = before ^ listening
    expected = [
        f"Connection to 127.0.0.1 {p} port [tcp/*] succeeded!" if p in listening
        else f"pync: connect to 127.0.0.1 port {p} (tcp) failed: Connection refused"
        for p in range(lo, hi + 1)
    ]
    assert got.returncode == 0
    lines = got.stderr.decode().splitlines()
    assert len(lines) == len(expected)
    assert [(a, b) for p, a, b in zip(range(lo, hi + 1), lines, expected)
            if a != b and p not in moving] == []
    assert set(opened) <= listening and all(
        f"Connection to 127.0.0.1 {p} port [tcp/*] succeeded!" in lines for p in opened)
    nc_lines = want.stderr.decode().replace("nc: ", "pync: ").splitlines()
    assert len(nc_lines) == len(expected)
    differ = [(a, b) for p, a, b in zip(range(lo, hi + 1), nc_lines, expected)
              if a != b and p not in moving]
    assert all("succeeded" in a for a, _ in differ), differ  # only nc's self-connects


def test_udp_scan_is_honest():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    echo.settimeout(TIMEOUT)
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    got = {}

    def answer():
        data, peer = echo.recvfrom(100)
        got["probe"] = data
        echo.sendto(b"here", peer)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    sp, ep = silent.getsockname()[1], echo.getsockname()[1]
    r = run_pync("-u", "-z", "-v", "-n", "-w", "1", "--udp-probe", "hello?", "127.0.0.1",
                 str(closed_port), str(sp), str(ep))
    t.join(TIMEOUT)
    silent.close()
    echo.close()
    assert got["probe"] == b"hello?"
    assert r.returncode == 0
    assert r.stderr.decode().splitlines() == [
        f"pync: connect to 127.0.0.1 port {closed_port} (udp) failed: Connection refused",
        f"Connection to 127.0.0.1 {sp} port [udp/*] open|filtered: no reply",
        f"Connection to 127.0.0.1 {ep} port [udp/*] succeeded!",
    ]
    r = run_pync("-u", "-z", "-w", "1", "127.0.0.1", str(closed_port))
    assert (r.returncode, r.stderr) == (1, b"")
