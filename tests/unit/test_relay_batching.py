"""When the relay raises SO_RCVLOWAT (fewer wake-ups in bulk) and when it
must not: a request/reply dialogue with replies of hundreds of KiB would
otherwise wait on the mark (and on Linux's window clamp, 40 ms a reply)."""

from __future__ import annotations

import io
import os
import socket
import threading

import pytest
from pynctest import TIMEOUT, linux_only, recv_all

from pync.base.report import Reporter
from pync.relay.loop import BATCH, BATCH_AFTER, Relay, RelayConfig
from pync.relay.streams import SocketStream, StdioStream

pytestmark = linux_only

KiB = 1024


@pytest.fixture
def marks(monkeypatch):
    """Every SO_RCVLOWAT the relay asks for, in order."""
    asked: list[int] = []
    real = SocketStream.wake_at

    def wake_at(self, nbytes):
        asked.append(nbytes)
        return real(self, nbytes)

    monkeypatch.setattr(SocketStream, "wake_at", wake_at)
    return asked


def _session(peer_job):
    """pync's relay between pipes (its stdin/stdout) and a loopback TCP
    socket whose other end runs peer_job(sock) in a thread."""
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        ours = socket.create_connection(lsock.getsockname())
        theirs, _ = lsock.accept()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    relay = Relay(StdioStream(in_r, out_w), SocketStream(ours, "net"),
                  RelayConfig(half_close=True), Reporter(io.StringIO()))
    threads = [threading.Thread(target=relay.run, daemon=True),
               threading.Thread(target=peer_job, args=(theirs,), daemon=True)]
    for t in threads:
        t.start()
    return relay, threads, (in_r, in_w, out_r, out_w), ours, theirs


def _finish(threads, fds, socks):
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive()
    for fd in fds:
        os.close(fd)
    for s in socks:
        s.close()


def _read_exactly(fd: int, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = os.read(fd, n - len(got))
        assert chunk, "stdout ended early"
        got += chunk
    return bytes(got)


def test_a_dialogue_of_large_messages_never_raises_the_mark(marks):
    """Six round trips of 300 KiB (a read far above the bulk threshold each
    time), echoed: never one-way long enough to be a bulk flow."""
    def echo(conn):
        conn.settimeout(TIMEOUT)
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

    relay, threads, fds, ours, theirs = _session(echo)
    _, in_w, out_r, _ = fds
    msg = os.urandom(300 * KiB)
    for _ in range(6):
        writer = threading.Thread(target=os.write, args=(in_w, msg))  # pipe is 1 MiB: no block
        writer.start()
        assert _read_exactly(out_r, len(msg)) == msg
        writer.join(TIMEOUT)
    os.close(in_w)  # the peer's EOF follows ours: the session ends
    _finish(threads, fds[:1] + fds[2:], (ours, theirs))
    assert all(n == 1 for n in marks), marks
    assert relay.received == relay.sent == 6 * len(msg)


def test_a_one_way_bulk_flow_raises_the_mark_then_drops_it(marks):
    """16 MiB one way: after BATCH_AFTER the mark goes up (at most BATCH),
    and a message after the flow, with the connection still open, arrives."""
    sent = threading.Event()
    tail = threading.Event()

    def bulk(conn):
        conn.sendall(b"b" * (16 * 1024 * KiB))
        sent.set()
        tail.wait(TIMEOUT)
        conn.sendall(b"tail\n")
        conn.shutdown(socket.SHUT_WR)

    relay, threads, fds, ours, theirs = _session(bulk)
    _, in_w, out_r, _ = fds
    assert _read_exactly(out_r, 16 * 1024 * KiB) == b"b" * (16 * 1024 * KiB)
    tail.set()
    assert _read_exactly(out_r, 5) == b"tail\n"
    os.close(in_w)
    _finish(threads, fds[:1] + fds[2:], (ours, theirs))
    raised = [n for n in marks if n > 1]
    assert raised and all(n <= BATCH for n in raised), marks
    assert relay.received >= BATCH_AFTER


@pytest.mark.parametrize("half_close", [False, True])
def test_telnet_replies_still_go_after_stdin_ended(half_close):
    """``pync -t host port </dev/null``: stdin ends before the server
    negotiates.  Without -N the socket is still open for writing and the
    server gets its answers (nc's atelnet() writes them whenever they come);
    with -N the write side was shut at stdin's end and nothing can go."""
    from pync.protocols.telnet import TelnetFilter
    from pync.relay.loop import ByteWork

    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        ours = socket.create_connection(lsock.getsockname())
        theirs, _ = lsock.accept()
    theirs.settimeout(TIMEOUT)
    in_r, in_w = os.pipe()
    os.close(in_w)  # stdin at its end from the start
    out_r, out_w = os.pipe()
    relay = Relay(StdioStream(in_r, out_w), SocketStream(ours, "net"),
                  RelayConfig(half_close=half_close), Reporter(io.StringIO()),
                  work=ByteWork(telnet=TelnetFilter()))
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        tick = threading.Event()
        for _ in range(int(TIMEOUT * 100)):  # bounded: until stdin's end is acted on
            if relay.stdin_done:
                break
            tick.wait(0.01)  # sleep-ok: bounded poll of the relay's state
        assert relay.stdin_done
        theirs.sendall(bytes([255, 253, 1]) + b"hi\n")  # IAC DO ECHO, then text
        assert _read_exactly(out_r, 3) == b"hi\n"
        theirs.shutdown(socket.SHUT_WR)  # the session ends at the server's close
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        ours.close()  # as the session's caller does: then the server reads its end
        replies = recv_all(theirs)
        assert replies == (b"" if half_close else bytes([255, 252, 1]))  # IAC WONT ECHO
    finally:
        for fd in (in_r, out_r, out_w):
            os.close(fd)
        ours.close()
        theirs.close()
