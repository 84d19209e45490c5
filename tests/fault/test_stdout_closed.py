"""stdout closed early (``pync ... | head -c 100``): quiet, no traceback, as nc.

The reader of pync's stdout takes 100 bytes and goes away (the test closes
its end of the pipe, as head does when it exits) while the peer keeps
sending.  Connect mode is compared with nc 1.219 run the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading

import pytest
from faultkit import wait_send_blocked
from pynctest import TIMEOUT, Server, free_port, pync_cmd, recv_all, require_tool


@pytest.fixture(params=["zero-copy", "copy"])
def relay_path(request, monkeypatch):
    monkeypatch.setenv("PYNC_ZERO_COPY", "1" if request.param == "zero-copy" else "0")
    return request.param


def _flood(sock: socket.socket, total: int = 64 << 20) -> None:
    chunk = b"y" * 65536
    try:
        for _ in range(total // len(chunk)):
            sock.sendall(chunk)
    except OSError:
        pass  # reset, or timed out against a reader that stopped


def _head_100(p: subprocess.Popen) -> bytes:
    """Read 100 bytes of p's stdout, then close it, as ``head -c 100`` does."""
    got = b""
    while len(got) < 100:
        chunk = p.stdout.read1(100 - len(got))
        assert chunk, "stdout ended before 100 bytes"
        got += chunk
    p.stdout.close()
    return got


def _connect_mode(cmd: list[str]) -> tuple[int, bytes, bytes]:
    """stdin stays open while stdout goes away; stdin closes afterwards."""
    srv = Server(_flood)
    r, w = os.pipe()
    p = subprocess.Popen([*cmd, "127.0.0.1", str(srv.port)], stdin=r,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(r)
    try:
        head = _head_100(p)
        os.close(w)  # stdin ends: both outputs are done now
        w = -1
        status = p.wait(TIMEOUT)
        err = p.stderr.read()
    finally:
        if w >= 0:
            os.close(w)
        p.kill()
        p.wait()
        p.stderr.close()
    srv.join()
    return status, head, err


def test_connect_mode_as_nc(relay_path):
    nc = _connect_mode([require_tool("nc")])
    mine = _connect_mode(pync_cmd())
    assert mine == nc == (0, b"y" * 100, b"")


def _listen_mode(cmd: list[str], udp: bool, window: float = 1.0,
                 fill_buffers: bool = False) -> tuple[bool, int, bytes]:
    """The peer floods a listener whose stdout goes away (its stdin stays
    open): did it end by itself within window seconds, with what status,
    and what on stderr?  (Its stdin is closed after the window.)"""
    port = free_port()
    r, w = os.pipe()
    p = subprocess.Popen([*cmd, "-l", *(["-u"] if udp else []), "127.0.0.1", str(port)],
                         stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(r)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    done = threading.Event()
    try:
        if udp:
            flooder = threading.Thread(target=_udp_flood, args=(peer, port, p, done))
        else:
            peer.close()
            peer = _connect_retrying(port, p)
            flooder = threading.Thread(target=_flood, args=(peer,))
        flooder.start()
        if fill_buffers:
            # Every buffer full before the reader goes: more bytes wait in the
            # socket when the listener meets EPIPE on its stdout.
            wait_send_blocked(peer)
        _head_100(p)
        try:
            p.wait(window)
            ended = True
        except subprocess.TimeoutExpired:
            ended = False
        os.close(w)  # stdin ends too; datagrams keep coming until it exits
        w = -1
        status = p.wait(TIMEOUT)
        done.set()
        flooder.join(TIMEOUT)
        err = p.stderr.read()
    finally:
        if w >= 0:
            os.close(w)
        peer.close()
        p.kill()
        p.wait()
        p.stderr.close()
    return ended, status, err


def _connect_retrying(port: int, p: subprocess.Popen) -> socket.socket:
    """nc cannot listen on port 0 or say when it listens: retry, bounded."""
    stop = threading.Event()
    for _ in range(200):
        sock = socket.socket()
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", port))
            return sock
        except ConnectionRefusedError:
            sock.close()
            assert p.poll() is None, "the listener died"
            stop.wait(0.02)  # sleep-ok: bounded retry until the listener is up
    raise AssertionError("listener never came up")


def _udp_flood(sock: socket.socket, port: int, p: subprocess.Popen,
               done: threading.Event) -> None:
    pause = threading.Event()
    for _ in range(2000):
        if p.poll() is not None or done.is_set():
            return
        try:
            sock.sendto(b"y" * 1000, ("127.0.0.1", port))
        except OSError:
            pass
        pause.wait(0.005)  # sleep-ok: pacing datagrams, not synchronising


@pytest.mark.parametrize("udp, fill_buffers", [(False, False), (False, True), (True, False)],
                         ids=["tcp", "tcp-buffers-full", "udp"])
def test_listen_mode_ends_at_once(udp, fill_buffers):
    """pync -l (-lu) ends as soon as its stdout is gone, status 0, silent,
    even when the peer has filled every buffer on the way (pync must not go
    on reading into a buffer whose destination is gone).  nc 1.219 ends at
    once too while it can still read; with its input buffer full it stays
    until its stdin ends, so nc is no reference here: it races."""
    assert _listen_mode(pync_cmd(), udp, fill_buffers=fill_buffers) == (True, 0, b"")


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_listen_mode_stdout_closed_is_quiet(udp):
    """Whenever it ends, it ends with status 0 and nothing on stderr."""
    _, status, err = _listen_mode(pync_cmd(), udp, window=0.0)
    assert (status, err) == (0, b"")


def _with_dead_stdout(*args: str) -> tuple[subprocess.Popen, int]:
    """``pync -l -v -n ARGS 127.0.0.1 0`` whose stdout is a pipe with no reader."""
    r, w = os.pipe()
    os.close(r)
    p = subprocess.Popen(pync_cmd("-l", "-v", "-n", *args, "127.0.0.1", "0"),
                         stdin=subprocess.DEVNULL, stdout=w, stderr=subprocess.PIPE)
    os.close(w)
    line = p.stderr.readline().decode()
    assert line.startswith("Listening on "), line
    return p, int(line.split()[-1])


def test_broker_goes_on_relaying_with_stdout_gone():
    room, port = _with_dead_stdout("--broker")
    try:
        a = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        b = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        for _ in range(2):
            assert room.stderr.readline().startswith(b"Connection received")
        for i in range(50):
            line = b"line %d " % i + b"x" * 4000 + b"\n"
            a.sendall(line)
            got = b""
            while len(got) < len(line):
                got += b.recv(65536)
            assert got == line
        a.close()
        b.close()
        assert room.poll() is None
        room.send_signal(signal.SIGTERM)
        assert room.wait(TIMEOUT) == 143
        assert b"Traceback" not in room.stderr.read()
    finally:
        room.kill()
        room.wait()
        room.stderr.close()


def test_exec_session_unaffected_by_closed_stdout():
    """-e: pync's own stdout is not in the session at all."""
    server, port = _with_dead_stdout("-e", "cat")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            s.sendall(b"echo\n")
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"echo\n"
        assert server.wait(TIMEOUT) == 0
        assert b"Traceback" not in server.stderr.read()
    finally:
        server.kill()
        server.wait()
        server.stderr.close()
