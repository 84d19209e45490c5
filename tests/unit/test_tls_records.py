"""TlsStream's reading of ciphertext: whatever the split points of what the
socket delivers, every plaintext byte comes out once and in order, both
when every whole record is handed to OpenSSL at once (bulk) and one record
at a time (once a half-close is asked for), and close_notify goes out only
when OpenSSL holds nothing unread.

The socket here is a script (chunks, "nothing yet", end of stream) so each
split point is exactly the one hypothesis chose; the peer is a real
OpenSSL session over memory BIOs.
"""

from __future__ import annotations

import ssl

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pync.relay.tls import TlsSession, TlsStream

trustme = pytest.importorskip("trustme")

WOULD_BLOCK = None  # a recv() that finds nothing


class ScriptedSocket:
    """recv() gives the scripted chunks (None: BlockingIOError), then b"";
    send() keeps what pync sent."""

    def __init__(self, chunks: list) -> None:
        self.chunks = list(chunks)
        self.sent = bytearray()

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return -1

    def recv(self, size: int) -> bytes:
        if not self.chunks:
            return b""
        chunk = self.chunks[0]
        if chunk is WOULD_BLOCK:
            self.chunks.pop(0)
            raise BlockingIOError
        self.chunks[0] = chunk[size:]
        if not self.chunks[0]:
            self.chunks.pop(0)
        return chunk[:size]

    def send(self, data) -> int:
        self.sent += data
        return len(data)

    def shutdown(self, how: int) -> None:
        pass


@pytest.fixture(scope="module")
def contexts():
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    return server, client


def pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    if src.pending:
        dst.write(src.read())


def handshaken(contexts):
    """pync's side (the client) and the peer, both past the handshake."""
    server_ctx, client_ctx = contexts
    ours_in, ours_out, peer_in, peer_out = (ssl.MemoryBIO() for _ in range(4))
    ours = client_ctx.wrap_bio(ours_in, ours_out, server_hostname="localhost")
    peer = server_ctx.wrap_bio(peer_in, peer_out, server_side=True)
    for _ in range(10):
        done = 0
        for obj in (ours, peer):
            try:
                obj.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        pump(ours_out, peer_in)
        pump(peer_out, ours_in)
        if done == 2:
            break
    ours_out.read()
    return ours, ours_in, ours_out, peer, peer_in, peer_out


def split(data: bytes, cuts: list[int], blocks: list[bool]) -> list:
    """data cut at the given points, with a 'nothing yet' after some pieces."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    script: list = []
    for i, (a, b) in enumerate(zip(points, points[1:])):
        script.append(data[a:b])
        if blocks and blocks[i % len(blocks)]:
            script.append(WOULD_BLOCK)
    return script


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 40000), min_size=1, max_size=6),
       cuts=st.lists(st.integers(0, 1 << 20), max_size=30),
       blocks=st.lists(st.booleans(), max_size=8),
       half_close_after=st.one_of(st.none(), st.integers(0, 6)),
       close_notify=st.booleans(),
       read_size=st.sampled_from([7, 700, 16384, 131072]))
@example(sizes=[1], cuts=[], blocks=[], half_close_after=1, close_notify=True, read_size=7)
def test_every_byte_once_whatever_the_split(contexts, sizes, cuts, blocks,
                                            half_close_after, close_notify, read_size):
    """Every byte once, then pync can still reply or half-close."""
    ours, ours_in, ours_out, peer, peer_in, peer_out = handshaken(contexts)
    plain = b"".join(bytes([i % 251]) * n for i, n in enumerate(sizes))
    pos = 0
    for n in sizes:
        peer.write(plain[pos:pos + n])
        pos += n
    if close_notify:
        try:
            peer.unwrap()
        except ssl.SSLWantReadError:
            pass
    wire = peer_out.read()
    sock = ScriptedSocket(split(wire, cuts, blocks))
    stream = TlsStream(TlsSession(sock, ours, ours_in, ours_out), "test")  # type: ignore[arg-type]
    got = bytearray()
    buf = memoryview(bytearray(read_size))
    reads = 0
    asked = False  # a half-close asked for before the end was seen
    shut = False   # a half-close asked for at all
    while True:
        if half_close_after is not None and reads == half_close_after:
            asked = not stream.eof
            shut = True
            stream.shutdown_write()
        reads += 1
        try:
            n = stream.read_into(buf)
        except BlockingIOError:
            continue
        if n == 0:
            break
        got += buf[:n]
        assert reads < len(plain) + 10000  # it ends
    assert bytes(got) == plain
    if not shut:
        # The peer's end (with close_notify, or without: a ragged end, as
        # ncat's half-close) still lets pync send, and the peer reads it.
        assert stream.write(memoryview(b"reply")) == 5
        peer_in.write(bytes(sock.sent))
        assert peer.read(100) == b"reply"
        return
    if asked:
        # The half-close was made (close_notify, then FIN) and, above, every
        # byte still came out: nothing was thrown away.  The peer reads our
        # close_notify.
        assert stream.fin_sent
        peer_in.write(bytes(sock.sent))
        try:  # OpenSSL's end of stream: our close_notify came
            assert peer.read(1) == b""
        except ssl.SSLZeroReturnError:
            pass  # (so it says it once the peer sent its own)
