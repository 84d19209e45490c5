"""Running out of descriptors, and thousands of connections in a row.

RLIMIT_NOFILE is lowered in pync's own process: before exec (preexec_fn)
or, to make descriptors "free up" later, on the running process with
prlimit(2) (the soft limit only, so it can be raised again).  A -k,
--broker or -k -e listener that meets EMFILE keeps running, does not spin
or flood stderr, and serves again once descriptors are available.
"""

from __future__ import annotations

import re
import resource
import socket
import subprocess

import pytest
from faultkit import children_of, open_fds, wait_until
from pynctest import (
    TIMEOUT,
    Proc,
    connect,
    pync_cmd,
    recv_all,
    run_in_threads,
    start_listener,
)

from pync.modes import broker

# What pync says when it meets the limit: the system's words, or its own refusal.
EXHAUSTED = "Too many open files|out of file descriptors"


def _limit(n: int, hard_too: bool = False):
    """A preexec_fn: the child may open n descriptors (and, hard_too, can
    raise that no further)."""
    def preexec() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n if hard_too else hard))
    return preexec


def _set_soft_limit(pid: int, n: int) -> None:
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (n, hard))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    import os
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _still_running_after(proc: Proc, seconds: float) -> bool:
    """Bounded wait for an exit that must not happen."""
    try:
        proc.p.wait(seconds)
    except subprocess.TimeoutExpired:
        return True
    return False


def _try_exchange(port: int, data: bytes) -> bytes:
    """Send, half-close, read to EOF; a reset or closed connection reads as b""."""
    try:
        with connect(port) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return recv_all(s)
    except OSError:
        return b""


def test_broker_out_of_descriptors_neither_spins_nor_floods():
    limit = 24  # the hard limit too: the broker raises its soft limit where it can
    room = Proc(pync_cmd("-l", "-v", "-n", "--broker", "127.0.0.1", "0"),
                preexec_fn=_limit(limit, hard_too=True))
    try:
        port = int(room.wait_stderr(r"Listening on \S+ (\d+)\n").group(1))
        crowd = [connect(port) for _ in range(limit + 10)]
        room.wait_stderr(EXHAUSTED)  # it met the limit
        before = _cpu_seconds(room.p.pid)
        assert _still_running_after(room, 0.5)
        assert _cpu_seconds(room.p.pid) - before < 0.2, "spinning on EMFILE"
        assert len(re.findall(EXHAUSTED.encode(), bytes(room.err))) <= len(crowd)
        for s in crowd:
            s.close()
        # Descriptors free: two new clients talk through the broker.
        a, b = connect(port), connect(port)
        for s in (a, b):
            room.wait_stderr(rf"Connection received on \S+ {s.getsockname()[1]}\n")
        a.sendall(b"ping\n")
        b.settimeout(TIMEOUT)
        assert b.recv(100) == b"ping\n"
        a.close()
        b.close()
        assert room.running()
    finally:
        room.p.terminate()
        room.wait()
    assert b"Traceback" not in room.err


def test_broker_raises_its_soft_limit_to_hold_max_conns():
    """A soft limit of 64 (the hard one higher), --max-conns 300: the broker
    raises its own limit, so 200 clients are all in the room at once."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 300 + broker.FD_SPARE:
        pytest.skip("the hard descriptor limit is below what the test needs")
    room = Proc(pync_cmd("-l", "-v", "-n", "--broker", "--max-conns", "300",
                         "127.0.0.1", "0"), preexec_fn=_limit(64))
    crowd = []
    try:
        port = int(room.wait_stderr(r"Listening on \S+ (\d+)\n").group(1))
        crowd = [connect(port) for _ in range(200)]
        room.wait_stderr(r"(?:Connection received[^\n]*\n){200}")
        crowd[-1].sendall(b"all here\n")
        for s in crowd[:-1]:
            s.settimeout(TIMEOUT)
            assert s.recv(100) == b"all here\n"
        assert not re.search(EXHAUSTED.encode(), bytes(room.err))
    finally:
        for s in crowd:
            s.close()
        room.p.terminate()
        room.wait()


@pytest.mark.parametrize("args", [["-k"], ["-k", "-e", "cat"]], ids=["k", "k-exec"])
def test_keep_open_listener_survives_emfile_at_accept(args):
    """At EMFILE the listener refuses (or defers) and goes on; the first
    connection after descriptors free up is served."""
    listener, port = start_listener(*args)
    try:
        # One session first: the listener is in its steady state.
        warm = _try_exchange(port, b"zero\n")
        if "-e" not in args:
            listener.wait_stdout("zero\n")
        else:
            assert warm == b"zero\n"
        n = len(open_fds(listener.p.pid))
        _set_soft_limit(listener.p.pid, n)  # no descriptor left for the next accept
        first = _try_exchange(port, b"one\n")
        second = _try_exchange(port, b"two\n")
        assert first in (b"", b"one\n") and second in (b"", b"two\n")
        assert _still_running_after(listener, 0.5), bytes(listener.err)
        _set_soft_limit(listener.p.pid, 1024)  # descriptors free up
        third = _try_exchange(port, b"three\n")
        if "-e" in args:
            assert third == b"three\n"
        else:
            listener.wait_stdout("three\n", timeout=2)
        assert listener.running()
    finally:
        listener.p.terminate()
        listener.wait()
    assert b"Traceback" not in listener.err


def test_exec_workers_out_of_descriptors_refuse_and_recover():
    """-k -e: the listener accepts, but the forked worker cannot create the
    child's pipes; each such client is closed with one message, and once the
    limit is raised the next client is served."""
    listener, port = start_listener("-k", "-e", "cat")
    try:
        assert _try_exchange(port, b"zero\n") == b"zero\n"  # steady state
        n = len(open_fds(listener.p.pid))
        _set_soft_limit(listener.p.pid, n + 1)  # the connection fits; the child's pipes do not
        for i in range(3):
            assert _try_exchange(port, b"refused %d\n" % i) in (b"", b"refused %d\n" % i)
        assert _still_running_after(listener, 0.3)
        _set_soft_limit(listener.p.pid, 1024)
        assert _try_exchange(port, b"served\n") == b"served\n"
        failures = len(re.findall(EXHAUSTED.encode(), bytes(listener.err)))
        assert failures <= 3
        wait_until(lambda: children_of(listener.p.pid) == [], what="workers to be reaped")
    finally:
        listener.p.terminate()
        assert listener.wait() == 143
    assert b"Traceback" not in listener.err


def test_keep_open_with_few_descriptors_serves_a_crowd_in_turn():
    """Plain -k holds one connection at a time: 30 clients, four at a time
    (the listen backlog is 5), against a limit of 12 descriptors (a session
    needs about 10) are all served, one after another."""
    clients, width = 30, 4
    listener = Proc(pync_cmd("-l", "-k", "-v", "-n", "127.0.0.1", "0"), preexec_fn=_limit(12))
    try:
        port = int(listener.wait_stderr(r"Listening on \S+ (\d+)\n").group(1))

        def client(i: int) -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
                s.sendall(b"line %02d\n" % i)
                s.shutdown(socket.SHUT_WR)
                recv_all(s)

        run_in_threads([lambda i=i: client(i) for i in range(clients)], width)
        listener.wait_stdout(rf"(?:line \d\d\n){{{clients}}}")
        assert sorted(bytes(listener.out).splitlines()) == [b"line %02d" % i
                                                             for i in range(clients)]
        assert listener.running()
    finally:
        listener.p.terminate()
        assert listener.wait() == 143


SHORT_CONNECTIONS = 5000


def test_thousands_of_short_connections_leave_nothing_behind():
    """5000 connections in a row to -l -k: each one's byte arrives, and the
    listener ends with the descriptors it started with and no child."""
    listener, port = start_listener("-k")
    try:
        _try_exchange(port, b".")  # steady state (a spare descriptor may be kept)
        listener.wait_stdout(r"\.")
        base = open_fds(listener.p.pid)
        addr = ("127.0.0.1", port)
        for _ in range(SHORT_CONNECTIONS - 1):
            s = socket.socket()
            s.settimeout(TIMEOUT)
            s.connect(addr)
            s.sendall(b".")
            s.shutdown(socket.SHUT_WR)
            s.recv(1)  # pync closes after the session: EOF
            s.close()
        listener.wait_stdout(rf"\.{{{SHORT_CONNECTIONS}}}")
        assert len(listener.out) == SHORT_CONNECTIONS
        assert open_fds(listener.p.pid) == base
        assert children_of(listener.p.pid) == []
    finally:
        listener.p.terminate()
        assert listener.wait() == 143
