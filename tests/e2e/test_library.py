"""pync.run() as a library: bytes in, io.BytesIO out, no deadlock, no exit."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import threading

from pynctest import TIMEOUT, Server, connect, recv_all

import pync


class LineWatch(io.StringIO):
    """A stderr for run() that lets a test wait for a message (bounded)."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()

    def write(self, text: str) -> int:
        with self.cond:
            n = super().write(text)
            self.cond.notify_all()
            return n

    def wait_for(self, pattern: str) -> re.Match:
        rx = re.compile(pattern)
        with self.cond:
            assert self.cond.wait_for(lambda: rx.search(self.getvalue()), TIMEOUT), \
                self.getvalue()
            m = rx.search(self.getvalue())
        assert m is not None
        return m


def listen_in_thread(argv: list[str], **kw) -> tuple[threading.Thread, dict, int]:
    """run(["-l", "-v", ...]) in a thread; returns it, its results, its port."""
    err = LineWatch()
    result: dict = {"err": err}

    def target() -> None:
        result["status"] = pync.run(["-l", "-v", "-n", *argv, "127.0.0.1", "0"],
                                    stderr=err, **kw)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    port = int(err.wait_for(r"Listening on \S+ (\d+)\n").group(1))
    return t, result, port


def test_100_mib_of_bytes_in_and_captured_out():
    """bytes input and BytesIO output of any size: both directions at once."""
    data = os.urandom(100 << 20)
    out = io.BytesIO()
    t, result, port = listen_in_thread([], stdin=data[:1 << 20], stdout=out)
    client_out = io.BytesIO()
    status = pync.run(["-N", "127.0.0.1", str(port)], stdin=data, stdout=client_out,
                      stderr=io.StringIO())
    t.join(TIMEOUT)
    assert not t.is_alive()
    assert status == 0 and result["status"] == 0
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(data).digest()
    # The listener ends at the client's EOF: whatever of its 1 MiB reached
    # the client is an exact prefix.
    assert data[:1 << 20].startswith(client_out.getvalue())


def test_bytesio_stdin_and_file_stdout(tmp_path):
    got = []
    srv = Server(lambda conn: got.append(recv_all(conn)) or None)
    target = tmp_path / "out"
    with open(target, "wb") as f:
        status = pync.run(["-N", "127.0.0.1", str(srv.port)],
                          stdin=io.BytesIO(b"from a BytesIO\n"), stdout=f,
                          stderr=io.StringIO())
    srv.join()
    assert status == 0
    assert got == [b"from a BytesIO\n"]
    assert target.read_bytes() == b""


def test_help_and_errors_never_exit():
    out, err = io.BytesIO(), io.StringIO()
    assert pync.run(["-h"], stdout=out, stderr=err) == 0
    assert out.getvalue().startswith(b"pync ") and b"Command Summary" in out.getvalue()
    err = io.StringIO()
    assert pync.run(["-w", "x", "localhost", "1"], stderr=err) == 1
    assert err.getvalue() == "pync: timeout invalid: x\n"


def test_unread_input_does_not_hang():
    """pync stops reading (the peer resets): the feeding thread ends anyway."""
    def handler(conn: socket.socket) -> None:
        conn.recv(10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")

    srv = Server(handler)
    status = pync.run(["127.0.0.1", str(srv.port)], stdin=b"x" * (64 << 20),
                      stdout=io.BytesIO(), stderr=io.StringIO())
    srv.join()
    assert status == 0


def test_verbose_twice_prints_a_transfer_summary():
    t, result, port = listen_in_thread(["-v"], stdin=b"answer\n", stdout=io.BytesIO())
    with connect(port) as s:
        s.sendall(b"x" * 1000)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"answer\n"
    t.join(TIMEOUT)
    assert result["status"] == 0
    assert re.search(r"pync: 7 bytes sent, 1000 bytes received in \d+\.\d\d seconds\n",
                     result["err"].getvalue()), result["err"].getvalue()


def test_progress_forced_shows_totals_and_percentage(tmp_path):
    data = tmp_path / "data"
    data.write_bytes(os.urandom(3 << 20))
    srv = Server(lambda conn: recv_all(conn) and None)
    err = io.StringIO()
    with open(data, "rb") as f:
        status = pync.run(["-N", "--progress=force", "127.0.0.1", str(srv.port)],
                          stdin=f, stdout=io.BytesIO(), stderr=err)
    srv.join()
    assert status == 0
    last = err.getvalue().split("\r")[-1]
    assert re.fullmatch(r"3\.00MiB sent, 0B received \d:\d\d:\d\d \[[^]]+/s\] "
                        r"\[=+\] 100% *\n", last), last


def test_progress_is_silent_when_stderr_is_not_a_terminal():
    srv = Server(lambda conn: recv_all(conn) and None)
    err = io.StringIO()
    status = pync.run(["-N", "--progress", "127.0.0.1", str(srv.port)],
                      stdin=b"quiet", stdout=io.BytesIO(), stderr=err)
    srv.join()
    assert status == 0
    assert err.getvalue() == ""
