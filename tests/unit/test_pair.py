"""A Pair in a Hub, in this process: two TCP connections joined both ways.

On Linux the bytes move by splice() through pipes of pync's own (counted
here), never through Python; a TLS side (or the portable backend) goes
through memory.  Half-close goes across, and the pair ends when both
directions are done.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading

import pytest
from pynctest import TIMEOUT, Certs, recv_all, wait_until

from pync.platform import EVENT_READ, EVENT_WRITE, backend
from pync.relay.buffers import MemoryBuffer, PipeBuffer
from pync.relay.hub import Hub
from pync.relay.pair import Pair
from pync.relay.streams import SocketStream
from pync.relay.tls import TlsSession, TlsStream, wait_fd

needs_splice = pytest.mark.skipif(not backend().zero_copy, reason="splice(): Linux's")


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        a = socket.create_connection(lsock.getsockname())
        b, _ = lsock.accept()
    return a, b


def run_pair(to_a: bytes = b"", to_b: bytes = b""):
    """client <-> [a | Pair | b] <-> server, the hub in a thread."""
    client, a = tcp_pair()
    b, server = tcp_pair()
    hub = Hub()
    ended: list[str] = []

    def on_end(pair: Pair, why: str) -> None:
        ended.append(why)
        hub.stop()

    pair = Pair(hub, SocketStream(a, "a"), SocketStream(b, "b"), on_end=on_end,
                to_a=to_a, to_b=to_b)
    thread = threading.Thread(target=hub.run, daemon=True)
    thread.start()
    return pair, client, server, thread, ended


def send_and_half_close(sock: socket.socket, data: bytes) -> threading.Thread:
    """sendall(data), then SHUT_WR, in a thread (bounded by TIMEOUT): more
    than the sockets between can hold must be read while it is being sent,
    or the sender blocks for ever."""
    def send() -> None:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    sock.settimeout(TIMEOUT)
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender


def test_bytes_both_ways_and_half_close_across():
    data = os.urandom(8 << 20)
    pair, client, server, thread, ended = run_pair(to_b=b"first ")
    try:
        sender = send_and_half_close(client, data)  # the server sees EOF after the bytes...
        got = recv_all(server)
        sender.join(TIMEOUT)
        assert hashlib.sha256(got).digest() == hashlib.sha256(b"first " + data).digest()
        server.sendall(b"answer after EOF")  # ... and its answer still goes back
        server.shutdown(socket.SHUT_WR)
        assert recv_all(client) == b"answer after EOF"
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        assert ended == ["closed"]
        assert (pair.ab.moved, pair.ba.moved) == (len(data) + 6, 16)
    finally:
        client.close()
        server.close()


@needs_splice
def test_on_linux_the_bytes_move_by_splice(monkeypatch):
    plat = backend()
    spliced = []
    real = plat.splice

    def counting(src: int, dst: int, count: int) -> int:
        n = real(src, dst, count)
        spliced.append(n)
        return n

    monkeypatch.setattr(plat, "splice", counting)
    pair, client, server, thread, _ = run_pair()
    try:
        assert isinstance(pair.ab.buf, PipeBuffer) and isinstance(pair.ba.buf, PipeBuffer)
        sender = send_and_half_close(client, b"z" * (4 << 20))
        assert len(recv_all(server)) == 4 << 20
        sender.join(TIMEOUT)
        server.shutdown(socket.SHUT_WR)
        recv_all(client)
        thread.join(TIMEOUT)
    finally:
        client.close()
        server.close()
    # Into pync's pipe and out of it; a few reads that find splice() with
    # nothing to take go by recv() (buffers.PipeBuffer): most go by splice.
    assert sum(spliced) >= 1.8 * (4 << 20)


def test_where_splice_cannot_go_the_bytes_go_through_bounded_memory(monkeypatch):
    monkeypatch.setenv("PYNC_ZERO_COPY", "0")
    pair, client, server, thread, _ = run_pair()
    try:
        assert isinstance(pair.ab.buf, MemoryBuffer) and pair.ab.buf.size == 64 * 1024
        client.sendall(b"hello")
        client.shutdown(socket.SHUT_WR)
        assert recv_all(server) == b"hello"
        server.shutdown(socket.SHUT_WR)
        assert recv_all(client) == b""
        thread.join(TIMEOUT)
    finally:
        client.close()
        server.close()


def _tls_server_side(sock: socket.socket, client: socket.socket,
                     certs: Certs) -> tuple[TlsSession, ssl.SSLSocket]:
    """A TLS session (pync's, over memory BIOs) on sock, its handshake done
    with client (made an ssl.SSLSocket, in a thread); both."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    ctx.num_tickets = 0  # nothing after the handshake but what the test sends
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = TlsSession(sock, ctx.wrap_bio(incoming, outgoing, server_side=True),
                     incoming, outgoing)
    sock.setblocking(False)
    cctx = ssl.create_default_context(cafile=certs.ca)
    done: list[ssl.SSLSocket] = []
    shaker = threading.Thread(target=lambda: done.append(
        cctx.wrap_socket(client, server_hostname="localhost")), daemon=True)
    shaker.start()
    while wait := tls.advance_handshake():
        wait_fd(sock, wait, TIMEOUT)
    shaker.join(TIMEOUT)
    assert done
    return tls, done[0]


def test_a_tls_close_notify_that_does_not_fit_waits_for_room_not_the_hub(tmp_path):
    """The destination ends its stream while the TLS client's socket is
    full: close_notify (then FIN) goes when the socket has room, and
    meanwhile the hub serves everyone else."""
    certs = Certs(str(tmp_path))
    client, a = tcp_pair()
    b, server = tcp_pair()
    client2, a2 = tcp_pair()
    b2, server2 = tcp_pair()
    tls, client = _tls_server_side(a, client, certs)
    filler = 0
    while True:  # fill the TLS client's way to the brim (it reads nothing yet)
        try:
            filler += a.send(b"\0" * 65536)
        except BlockingIOError:
            break
    hub = Hub()
    ended: list[str] = []

    def on_end(pair: Pair, why: str) -> None:
        ended.append(why)
        hub.stop()

    stream = TlsStream(tls, "a")
    Pair(hub, stream, SocketStream(b, "b"), on_end=on_end)
    Pair(hub, SocketStream(a2, "a2"), SocketStream(b2, "b2"))
    thread = threading.Thread(target=hub.run, daemon=True)
    thread.start()
    raw = socket.socket(fileno=os.dup(client.fileno()))
    try:
        server.shutdown(socket.SHUT_WR)  # the destination's end: close_notify is due
        wait_until(lambda: stream.half_close, what="the end of stream passed on")
        assert stream.closing() == EVENT_WRITE  # no room: close_notify waits ...
        client2.sendall(b"ping")  # ... and the hub goes on with the others
        server2.settimeout(TIMEOUT)
        assert server2.recv(4) == b"ping"
        got = recv_all(raw)  # room at last: the filler, close_notify, then FIN
        assert got[:filler] == b"\0" * filler
        assert got[filler:filler + 3] in (b"\x15\x03\x03", b"\x17\x03\x03")  # one record
        assert len(got) == filler + 5 + int.from_bytes(got[filler + 3:filler + 5], "big")
        raw.shutdown(socket.SHUT_WR)
        assert recv_all(server) == b""
        thread.join(TIMEOUT)
        assert ended == ["closed"]
    finally:
        hub.stop()
        for s in (raw, client, server, client2, server2):
            s.close()


class SlowToEnd(SocketStream):
    """An end whose end of stream goes out only once ``let_go`` is set (as
    TLS's close_notify waits for room in the socket)."""

    let_go = False
    asked = sent = False

    def shutdown_write(self) -> None:
        self.asked = True
        if self.let_go and not self.sent:
            self.sent = True
            super().shutdown_write()

    def closing(self) -> int:
        return EVENT_WRITE if self.asked and not self.sent else 0


def test_a_pair_ends_only_once_each_end_of_stream_has_gone_out():
    client, a = tcp_pair()
    b, server = tcp_pair()
    hub = Hub()
    ended: list[str] = []

    def on_end(pair: Pair, why: str) -> None:
        ended.append(why)
        hub.stop()

    slow = SlowToEnd(a, "a")
    Pair(hub, slow, SocketStream(b, "b"), on_end=on_end)
    thread = threading.Thread(target=hub.run, daemon=True)
    thread.start()
    try:
        server.shutdown(socket.SHUT_WR)
        wait_until(lambda: slow.asked, what="the end of stream passed on")
        client.shutdown(socket.SHUT_WR)
        assert recv_all(server) == b""  # both ways are done but for a's end
        assert not ended and slow.closing()
        slow.let_go = True  # the next time a is writable it goes out
        assert recv_all(client) == b""
        assert slow.sent  # the client's EOF is that end of stream, not a close before it
        thread.join(TIMEOUT)
        assert ended == ["closed"]
    finally:
        hub.stop()
        client.close()
        server.close()


def test_a_tls_end_put_off_for_unread_bytes_does_not_spin(tmp_path):
    """The TLS client sent more than the destination reads, then the
    destination ends its stream: close_notify must wait until OpenSSL's
    decrypted bytes are read (its shutdown would drop them), and while it
    waits, the pair is not woken at every turn of the loop."""
    certs = Certs(str(tmp_path))
    client, a = tcp_pair()
    b, server = tcp_pair()
    client2, a2 = tcp_pair()
    b2, server2 = tcp_pair()
    tls, client = _tls_server_side(a, client, certs)
    hub = Hub()
    stream = TlsStream(tls, "a")
    pair = Pair(hub, stream, SocketStream(b, "b"))
    Pair(hub, SocketStream(a2, "a2"), SocketStream(b2, "b2"))
    wakes = [0]
    real = pair.on_ready

    def counted(fd, events) -> None:
        wakes[0] += 1
        real(fd, events)

    pair.on_ready = counted  # type: ignore[method-assign]
    thread = threading.Thread(target=hub.run, daemon=True)
    thread.start()
    try:
        client.setblocking(False)
        record = b"x" * 16384
        # until every buffer on the way to the (unread) destination is full
        wait_until(lambda: _send_some(client, record) == 0 and _send_some(client, record) == 0,
                   what="the way to the destination full")
        server.shutdown(socket.SHUT_WR)
        wait_until(lambda: stream.closing() == EVENT_READ, what="close_notify put off")
        # a is writable all along (its peer sends, and has read all there
        # was): waiting for that would wake the pair at every turn
        assert not hub._watched[a.fileno()][0] & EVENT_WRITE
        before = wakes[0]
        server2.settimeout(TIMEOUT)
        for _ in range(50):  # the loop turns: other pairs move bytes
            client2.sendall(b"ping")
            assert server2.recv(4) == b"ping"
        assert wakes[0] - before < 50
    finally:
        hub.stop()
        for s in (client, server, client2, server2):
            s.close()


def _send_some(sock: ssl.SSLSocket, data: bytes) -> int:
    """What a non-blocking send takes (0: nothing, the way is full), after a moment's wait."""
    try:
        return sock.send(data)
    except (BlockingIOError, ssl.SSLWantWriteError):
        wait_fd(sock, EVENT_WRITE, 0.2)
        return 0
