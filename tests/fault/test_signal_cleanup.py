"""SIGINT, SIGTERM and SIGHUP in every mode: a clean exit, nothing left behind.

pync exits 130, 143 or 129 without a traceback; the UNIX socket file (or
the temporary directory of a -Uu client) it created is gone; every process
it started (exec children, -k workers, scan workers) is terminated.  Each
scenario first brings pync to a steady state (connected, listening,
relaying, scanning), observed through its -v lines or its peers, never by
sleeping.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Callable, Optional

import pytest
from faultkit import descendants, state, wait_until
from pynctest import Proc, connect, filtered_port, pync_cmd, start_listener

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


class Scene:
    """A pync process in a steady state, and what it must clean up."""

    def __init__(self, proc: Proc, paths: tuple[str, ...] = (),
                 keep: tuple[socket.socket, ...] = (), kids: int = 0) -> None:
        self.proc = proc
        self.paths = paths  # files or directories pync created
        self.keep = list(keep)  # our sockets, closed after the check
        self.kids = kids  # processes pync must have started by now


def _listener(*args: str) -> tuple[Proc, int]:
    return start_listener(*args)


def connect_mode(tmp: str) -> Scene:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    p = Proc(pync_cmd("-v", "-n", "127.0.0.1", str(srv.getsockname()[1])))
    p.wait_stderr("succeeded")
    conn, _ = srv.accept()
    return Scene(p, keep=(srv, conn))


def connecting(tmp: str) -> Scene:
    held: list[socket.socket] = []
    port = filtered_port(held)
    # A refused port first: its -v line says the filtered one is being tried.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    p = Proc(pync_cmd("-v", "-n", "-w", "30", "127.0.0.1",
                      str(closed.getsockname()[1]), str(port)))
    p.wait_stderr("Connection refused")
    return Scene(p, keep=(*held, closed))


def listening(tmp: str) -> Scene:
    return Scene(_listener()[0])


def listen_session(tmp: str) -> Scene:
    p, port = _listener()
    c = connect(port)
    p.wait_stderr("Connection received")
    return Scene(p, keep=(c,))


def keep_open(tmp: str) -> Scene:
    p, port = _listener("-k")
    c = connect(port)
    c.sendall(b"hi\n")
    p.wait_stdout("hi\n")
    return Scene(p, keep=(c,))


def udp_listen(tmp: str) -> Scene:
    p = Proc(pync_cmd("-u", "-l", "-v", "-n", "127.0.0.1", "0"))
    port = int(p.wait_stderr(r"Bound on \S+ (\d+)\n").group(1))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"dgram\n", ("127.0.0.1", port))
    p.wait_stdout("dgram\n")
    return Scene(p, keep=(s,))


def udp_connect(tmp: str) -> Scene:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    p = Proc(pync_cmd("-u", "127.0.0.1", str(s.getsockname()[1])))
    p.send(b"up\n")
    assert s.recv(100) == b"up\n"
    return Scene(p, keep=(s,))


def unix_listen(tmp: str, *extra: str) -> Scene:
    path = os.path.join(tmp, "l.sock")
    p = Proc(pync_cmd("-lU", "-v", *extra, path))
    p.wait_stderr("Bound on")
    assert os.path.exists(path)
    if "-u" in extra:  # a first datagram: past set-up (see test_signal_races)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.sendto(b"dgram\n", path)
        p.wait_stdout("dgram\n")
        return Scene(p, paths=(path,), keep=(s,))
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(10)
    c.connect(path)
    p.wait_stderr("Connection received")
    return Scene(p, paths=(path,), keep=(c,))


def unix_dgram_connect(tmp: str) -> Scene:
    path = os.path.join(tmp, "server.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(10)
    p = Proc(pync_cmd("-Uu", path))
    p.send(b"x\n")
    data, own = srv.recvfrom(100)  # pync's own socket, in a temp dir of its own
    assert data == b"x\n" and own
    return Scene(p, paths=(own, os.path.dirname(own)), keep=(srv,))


def broker(tmp: str, *extra: str) -> Scene:
    p, port = _listener("--broker", *extra)
    c = connect(port)
    p.wait_stderr("Connection received")
    return Scene(p, keep=(c,))


def scan(tmp: str) -> Scene:
    held: list[socket.socket] = []
    port = filtered_port(held)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    p = Proc(pync_cmd("-z", "-v", "-n", "-w", "30", "127.0.0.1",
                      str(closed.getsockname()[1]), str(port)))
    p.wait_stderr("Connection refused")
    return Scene(p, keep=(*held, closed))


def parallel_scan(tmp: str) -> Scene:
    """Over 4096 ports: pync forks scan workers; one waits on a filtered port."""
    held: list[socket.socket] = []
    port = filtered_port(held)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    c = str(closed.getsockname()[1])
    p = Proc(pync_cmd("-z", "-n", "-w", "30", "127.0.0.1", *[c] * 4200, str(port)))
    wait_until(lambda: descendants(p.p.pid), what="a scan worker")
    return Scene(p, keep=(*held, closed), kids=1)


def exec_listen(tmp: str) -> Scene:
    p, port = _listener("-c", "echo ready; exec sleep 1000")
    c = connect(port)
    assert c.recv(100) == b"ready\n"
    return Scene(p, keep=(c,), kids=1)


def exec_keep_open(tmp: str) -> Scene:
    p, port = _listener("-k", "-c", "echo ready; exec sleep 1000")
    socks = [connect(port) for _ in range(2)]
    for s in socks:
        assert s.recv(100) == b"ready\n"
    return Scene(p, keep=tuple(socks), kids=4)  # two workers, each with a child


def exec_connect(tmp: str) -> Scene:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    p = Proc(pync_cmd("-c", "echo ready; exec sleep 1000", "127.0.0.1",
                      str(srv.getsockname()[1])))
    conn, _ = srv.accept()
    conn.settimeout(10)
    assert conn.recv(100) == b"ready\n"
    return Scene(p, keep=(srv, conn), kids=1)


MODES: dict[str, Callable[[str], Scene]] = {
    "connect": connect_mode,
    "connecting": connecting,
    "listen": listening,
    "listen-session": listen_session,
    "keep-open": keep_open,
    "udp-listen": udp_listen,
    "udp-connect": udp_connect,
    "unix-listen": unix_listen,
    "unix-keep-open": lambda tmp: unix_listen(tmp, "-k"),
    "unix-dgram-listen": lambda tmp: unix_listen(tmp, "-u"),
    "unix-dgram-connect": unix_dgram_connect,
    "broker": broker,
    "chat": lambda tmp: broker(tmp, "--chat"),
    "scan": scan,
    "parallel-scan": parallel_scan,
    "exec": exec_listen,
    "exec-keep-open": exec_keep_open,
    "exec-connect": exec_connect,
}


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("mode", list(MODES))
def test_signal_exits_clean(mode, sig, sock_dir):
    scene = MODES[mode](sock_dir)
    proc = scene.proc
    started: Optional[list[int]] = None
    try:
        started = descendants(proc.p.pid)
        assert len(started) >= scene.kids, f"expected {scene.kids} processes: {started}"
        proc.p.send_signal(sig)
        assert proc.wait() == 128 + sig
    finally:
        proc.kill()
        for s in scene.keep:
            s.close()
    assert b"Traceback" not in proc.err, proc.err.decode()
    for path in scene.paths:
        assert not os.path.lexists(path), f"{path} left behind"
    # Every process pync started is gone (or a zombie its new parent reaps).
    for pid in started or ():
        wait_until(lambda pid=pid: state(pid) in ("gone", "Z"), what=f"process {pid} to end")
