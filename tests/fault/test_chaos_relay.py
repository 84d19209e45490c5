"""A chaos relay between pync and its peer: split writes, delays, resets.

Whatever the relay does, the bytes that reached pync before a fault reach
its stdout, pync exits 0 and says nothing under -v (as nc 1.219 after a
reset; nc may even lose bytes that arrived just before one: pync does
not), never a traceback, and nothing hangs: every run is bounded by
pynctest.TIMEOUT.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading

import pytest
from faultkit import A2B, B2A, ChaosRelay, children_of, reset
from pynctest import (
    TIMEOUT,
    Proc,
    Server,
    connect,
    pync_cmd,
    recv_all,
    require_tool,
    start_listener,
)


@pytest.fixture(params=["zero-copy", "copy"])
def relay_path(request, monkeypatch):
    """pync's splice path and its copy path must both survive the faults."""
    monkeypatch.setenv("PYNC_ZERO_COPY", "1" if request.param == "zero-copy" else "0")
    return request.param


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def serve_then_drain(data: bytes):
    """A peer that sends data, then reads until the connection ends."""
    def handler(conn: socket.socket) -> None:
        try:
            conn.sendall(data)
            recv_all(conn)
        except OSError:
            pass  # the relay reset or closed us: that is the test
    return handler


def no_traceback(err: bytes) -> None:
    assert b"Traceback" not in err, err.decode(errors="replace")


def stderr_lines(err: bytes) -> list[str]:
    """-v lines other than the connection notices (a reset is not reported
    under -v: nc 1.219 says nothing about it)."""
    return [line for line in err.decode().splitlines()
            if not line.startswith(("Connection to ", "Listening on ", "Connection received"))]


# (split, size, reset after, max random piece, max delay between writes)
DOWNLOAD_RESETS = [
    pytest.param("bytes", 2000, 0, 1, 0.0, id="1-byte-reset-at-once"),
    pytest.param("bytes", 2000, 1, 1, 0.0, id="1-byte-reset-after-1"),
    pytest.param("bytes", 2000, 777, 1, 0.0, id="1-byte-reset-after-777"),
    pytest.param("random", 300_000, 150_001, 8192, 0.0, id="random-reset-mid"),
    pytest.param("random", 300_000, 299_999, 65536, 0.0, id="random-reset-1-before-end"),
    pytest.param("random", 20_000, 12_345, 512, 0.003, id="random-delayed-reset"),
    pytest.param("whole", 4 << 20, 3 << 20, 0, 0.0, id="bulk-reset-at-3MiB"),
]


@pytest.mark.parametrize("split, size, at, piece, delay", DOWNLOAD_RESETS)
def test_bytes_before_a_reset_reach_stdout(relay_path, split, size, at, piece, delay):
    data = blob(size, at)
    srv = Server(serve_then_drain(data))
    connected = threading.Event()
    relay = ChaosRelay(srv.port, split=split, max_piece=piece or 4096, delay=delay,
                       reset_after=at, reset_way=B2A, reset_side="a", seed=at,
                       hold=connected)
    p = Proc(pync_cmd("-v", "-n", "127.0.0.1", str(relay.port)))  # stdin stays open
    p.wait_stderr(r"Connection to 127\.0\.0\.1 \d+ port \[tcp/\*\] succeeded!\n")
    connected.set()
    assert p.wait() == 0
    relay.join()
    srv.join()
    p.close_stdin()
    assert relay.did_reset
    assert len(p.out) == at and bytes(p.out) == data[:at]
    no_traceback(p.err)
    assert stderr_lines(bytes(p.err)) == []


@pytest.mark.parametrize("split, piece, delay", [
    ("bytes", 1, 0.0), ("random", 3000, 0.0), ("random", 700, 0.002)])
def test_split_and_delayed_writes_lose_nothing_either_way(relay_path, tmp_path, split,
                                                          piece, delay):
    """No reset: every byte arrives in both directions, EOF passes through."""
    size = 3000 if split == "bytes" else 200_000
    down, up = blob(size, 1), blob(size, 2)
    got = {}

    def peer(conn: socket.socket) -> None:
        conn.sendall(down)
        conn.shutdown(socket.SHUT_WR)
        got["up"] = recv_all(conn)

    srv = Server(peer)
    relay = ChaosRelay(srv.port, split=split, max_piece=piece, delay=delay, seed=size)
    src = tmp_path / "up"
    src.write_bytes(up)
    with open(src, "rb") as f:
        r = subprocess.run(pync_cmd("-N", "127.0.0.1", str(relay.port)), stdin=f,
                           capture_output=True, timeout=TIMEOUT)
    relay.join()
    srv.join()
    assert (r.returncode, r.stderr) == (0, b"")
    assert r.stdout == down
    assert got["up"] == up


def test_reset_while_sending_ends_pync_at_once(tmp_path, relay_path):
    """The peer resets while pync still has megabytes of stdin to send."""
    src = tmp_path / "up"
    src.write_bytes(os.urandom(8 << 20))
    srv = Server(serve_then_drain(b""))
    relay = ChaosRelay(srv.port, split="random", max_piece=65536, reset_after=100_000,
                       reset_way=A2B, reset_side="a")
    with open(src, "rb") as f:
        r = subprocess.run(pync_cmd("-v", "-n", "127.0.0.1", str(relay.port)), stdin=f,
                           capture_output=True, timeout=TIMEOUT)
    relay.join()
    srv.join()
    assert relay.did_reset
    assert r.returncode == 0  # as nc
    no_traceback(r.stderr)
    assert stderr_lines(r.stderr) == []


@pytest.mark.parametrize("at", [0, 1, 4096])
def test_listener_keeps_what_arrived_before_a_reset(relay_path, at):
    listener, port = start_listener()
    relay = ChaosRelay(port, split="bytes", reset_after=at, reset_way=A2B, reset_side="b")
    data = blob(6000, at)
    with connect(relay.port) as c:
        try:
            c.sendall(data)
        except OSError:
            pass  # the relay may already be gone (at = 0)
        assert listener.wait() == 0
    relay.join()
    listener.close_stdin()
    assert bytes(listener.out) == data[:at]
    no_traceback(listener.err)
    assert stderr_lines(bytes(listener.err)) == []


def test_keep_open_listener_survives_a_reset_and_serves_the_next():
    listener, port = start_listener("-k")
    try:
        relay = ChaosRelay(port, split="random", max_piece=100, reset_after=1000,
                           reset_way=A2B, reset_side="b", seed=7)
        with connect(relay.port) as c:
            try:
                c.sendall(b"a" * 5000)
            except OSError:
                pass
            relay.join()
        listener.wait_stdout(r"a{1000}")
        with connect(port) as c:
            c.sendall(b"next client\n")
        listener.wait_stdout(r"a{1000}next client\n")
        assert bytes(listener.out) == b"a" * 1000 + b"next client\n"
        assert listener.running()
    finally:
        listener.p.terminate()
        assert listener.wait() == 143
    no_traceback(listener.err)


def test_exec_child_reaped_after_a_reset():
    """-e: a reset mid-session ends it; the child is reaped, its output so far sent."""
    listener, port = start_listener("-e", "cat")
    relay = ChaosRelay(port, split="bytes", reset_after=300, reset_way=A2B,
                       reset_side="b")
    with connect(relay.port) as c:
        try:
            c.sendall(b"x" * 1000)
        except OSError:
            pass
        assert listener.wait() == 0
    relay.join()
    assert children_of(listener.p.pid) == []
    no_traceback(listener.err)


def test_trickle_keeps_idle_timeout_from_firing():
    """-w 1 counts idle time: 3 bytes 0.6 s apart (1.2 s in all) all arrive,
    then 1 s of silence ends it."""
    def peer(conn: socket.socket) -> None:
        conn.sendall(b"abc")
        recv_all(conn)  # never closes first: only -w ends pync

    srv = Server(peer)
    relay = ChaosRelay(srv.port, split="bytes", delay=0.6, steady=True)
    p = Proc(pync_cmd("-w", "1", "127.0.0.1", str(relay.port)))
    assert p.wait() == 0
    relay.join()
    srv.join()
    p.close_stdin()
    assert bytes(p.out) == b"abc"
    assert bytes(p.err) == b""


def _reset_under_v(cmd: list[str]) -> tuple[int, bytes, list[str]]:
    """Run cmd -v against a peer that sends hello and, once it was printed,
    resets: status, stdout, stderr lines other than the "succeeded" notice.
    (Resetting before nc has read loses the bytes in nc: a race of its own.)"""
    printed = threading.Event()

    def peer(conn: socket.socket) -> None:
        conn.sendall(b"hello\n")
        assert printed.wait(TIMEOUT)
        reset(conn)

    srv = Server(peer)
    p = Proc([*cmd, "-v", "-n", "127.0.0.1", str(srv.port)])
    p.wait_stdout("hello\n")
    printed.set()
    rc = p.wait()
    srv.join()
    p.close_stdin()
    lines = bytes(p.err).decode().splitlines()
    return rc, bytes(p.out), [ln for ln in lines if "succeeded" not in ln]


def test_reset_status_and_data_as_nc():
    nc = _reset_under_v([require_tool("nc")])
    mine = _reset_under_v(pync_cmd())
    assert mine[:2] == nc[:2] == (0, b"hello\n")
    no_traceback("\n".join(mine[2]).encode())


def test_reset_is_silent_under_v_as_nc():
    """nc 1.219 prints nothing on a reset (the words are not even in its binary)."""
    nc = _reset_under_v([require_tool("nc")])
    mine = _reset_under_v(pync_cmd())
    assert [ln.replace("pync:", "nc:") for ln in mine[2]] == nc[2] == []


def _early_close_under_v(cmd: list[str]) -> tuple[int, bytes, list[str]]:
    """cmd -v sends 64 MiB to a peer that says bye and closes without reading."""
    srv = Server(lambda conn: conn.sendall(b"bye\n"))
    r = subprocess.run([*cmd, "-v", "-n", "127.0.0.1", str(srv.port)],
                       input=b"\0" * (64 << 20), capture_output=True, timeout=TIMEOUT)
    srv.join()
    lines = r.stderr.decode().splitlines()
    return r.returncode, r.stdout, [ln for ln in lines if "succeeded" not in ln]


def test_peer_gone_while_sending_status_and_data_as_nc():
    nc = _early_close_under_v([require_tool("nc")])
    mine = _early_close_under_v(pync_cmd())
    assert mine[0] == nc[0] == 0
    assert mine[1] == b"bye\n"  # nc sometimes loses it: the reset races its read
    assert nc[1] in (b"", b"bye\n")
    no_traceback("\n".join(mine[2]).encode())


def test_peer_gone_while_sending_is_silent_under_v_as_nc():
    nc = _early_close_under_v([require_tool("nc")])
    mine = _early_close_under_v(pync_cmd())
    assert [ln.replace("pync:", "nc:") for ln in mine[2]] == nc[2] == []
