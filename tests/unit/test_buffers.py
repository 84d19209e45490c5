"""Which buffer each direction gets, and that both kinds move bytes alike."""

from __future__ import annotations

import io
import os
import socket
import time

import pytest

from pync.base.report import Reporter
from pync.relay.buffers import MemoryBuffer, PipeBuffer, new_buffer
from pync.relay.streams import SocketStream, StdioStream

needs_splice = pytest.mark.skipif(not hasattr(os, "splice"), reason="os.splice: Python >= 3.10")


@needs_splice
def test_pipe_to_socket_takes_the_zero_copy_path(monkeypatch):
    monkeypatch.delenv("PYNC_ZERO_COPY", raising=False)
    r, w = os.pipe()
    a, b = socket.socketpair()
    try:
        buf = new_buffer(StdioStream(r, None), SocketStream(a, "a"), transform=False)
        assert isinstance(buf, PipeBuffer)
        buf.close()
        assert isinstance(new_buffer(StdioStream(r, None), SocketStream(a, "a"), True),
                          MemoryBuffer)
        monkeypatch.setenv("PYNC_ZERO_COPY", "0")
        assert isinstance(new_buffer(StdioStream(r, None), SocketStream(a, "a"), False),
                          MemoryBuffer)
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


def test_terminals_use_memory_and_dev_null_takes_splice(monkeypatch):
    """splice() cannot write to a terminal; /dev/null takes it (and drops
    the pages), so a receiver writing there never copies bytes."""
    monkeypatch.delenv("PYNC_ZERO_COPY", raising=False)
    a, b = socket.socketpair()
    master, slave = os.openpty()
    null = os.open(os.devnull, os.O_WRONLY)
    appending = os.open(os.devnull, os.O_WRONLY | os.O_APPEND)
    try:
        assert isinstance(new_buffer(SocketStream(a, "a"), StdioStream(None, slave), False),
                          MemoryBuffer)
        buf = new_buffer(SocketStream(a, "a"), StdioStream(None, null), False)
        assert isinstance(buf, PipeBuffer if hasattr(os, "splice") else MemoryBuffer)
        buf.close()
        # >>/dev/null: splice() refuses O_APPEND there as on files
        assert isinstance(new_buffer(SocketStream(a, "a"), StdioStream(None, appending), False),
                          MemoryBuffer)
    finally:
        for fd in (null, appending, master, slave):
            os.close(fd)
        a.close()
        b.close()


@pytest.mark.parametrize("kind", ["memory", "pipe"])
def test_fill_and_drain_keep_bytes_in_order(kind):
    if kind == "pipe" and not hasattr(os, "splice"):
        pytest.skip("os.splice: Python >= 3.10")
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    buf = MemoryBuffer(64) if kind == "memory" else PipeBuffer()
    src, dst = StdioStream(src_r, None), StdioStream(None, dst_w)
    data = os.urandom(5000)
    os.write(src_w, data)
    os.close(src_w)
    out = b""
    while True:
        n = buf.fill(src) if buf.room else 1
        while not buf.empty:
            buf.drain(dst)
            out += os.read(dst_r, 65536)
        if n == 0:
            break
    assert out == data
    buf.close()
    for fd in (src_r, dst_r, dst_w):
        os.close(fd)


def test_crlf_never_reads_more_than_half_the_room():
    """LF -> CRLF doubles at most: with 1 byte of room, -C must not read."""
    import io

    from pync.base.report import Reporter
    from pync.relay.loop import Relay, RelayConfig

    r, w = os.pipe()
    a, b = socket.socketpair()
    try:
        relay = Relay(StdioStream(r, None), SocketStream(a, "a"), RelayConfig(crlf=True),
                      Reporter(io.StringIO()))
        up = relay.up.buf
        up.append(b"x" * (up.size - 1))
        assert relay._read_room(relay.up) == 0
        up.clear()
        up.append(b"x" * (up.size - 7))
        assert relay._read_room(relay.up) == 3
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


class _Clock:
    """A monotonic clock the test moves: 'waiting' costs no real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("receiver", ["slow", "fast"])
def test_sendfile_hands_over_to_copying_when_a_local_receiver_is_slow(
        receiver, tmp_path, monkeypatch):
    """A receiver on this host that keeps pync waiting for two windows in a
    row gets the rest by copying; one that keeps up keeps sendfile.  Either
    way every byte arrives once, in order, from the file's offset on."""
    import pync.relay.buffers as buffers

    clock = _Clock()
    monkeypatch.setattr(buffers.time, "monotonic", clock)
    data = os.urandom(1024 * 1024)
    path = tmp_path / "data"
    path.write_bytes(data)
    a, b = socket.socketpair()  # a UNIX socket: a receiver on this host
    a.setblocking(False)
    src = os.open(path, os.O_RDONLY)
    os.lseek(src, 1000, os.SEEK_SET)
    buf = buffers.FileSendBuffer(local_peer=True)
    buf.WINDOW = 64 * 1024
    got = bytearray()
    switched_at = None
    try:
        while True:
            n = buf.fill(StdioStream(src, None)) if buf.room else 1
            while not buf.empty:
                try:
                    buf.drain(SocketStream(a, "a"))
                except BlockingIOError:
                    if receiver == "slow":
                        clock.now += 1.0  # pync waited a long second for the reader
                    got += b.recv(48 * 1024)  # less than a window: it waits in each
                if buf.copy is not None and switched_at is None:
                    switched_at = len(got)
                if receiver == "fast":
                    clock.now += 0.001  # time passes sending, none waiting
            if n == 0:
                break
        a.shutdown(socket.SHUT_WR)
        while True:
            chunk = b.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    finally:
        os.close(src)
        a.close()
        b.close()
    assert bytes(got) == data[1000:]
    if receiver == "slow":
        assert buf.copy is not None and switched_at < len(data) // 2
    else:
        assert buf.copy is None


def test_sendfile_judges_only_receivers_on_this_host():
    """Across a network a full socket says nothing about how the receiver
    reads: sendfile stays whatever the waiting."""
    from pync.platform import backend

    same_host = backend().same_host

    a, b = socket.socketpair()
    lsock = socket.socket()
    try:
        assert same_host(a)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        c = socket.create_connection(lsock.getsockname())
        assert same_host(c)
        c.close()
        with socket.socket() as unconnected:
            assert not same_host(unconnected)  # no peer to judge
    finally:
        for s in (a, b, lsock):
            s.close()


@needs_splice
def test_recv_limit_reads_the_same_size_on_either_path(monkeypatch):
    """-W N counts network reads: a splice may take 1 MiB where a read takes
    128 KiB, so with -W the network side copies on either path."""
    import io

    from pync.base.report import Reporter
    from pync.relay.loop import Relay, RelayConfig

    monkeypatch.delenv("PYNC_ZERO_COPY", raising=False)
    r, w = os.pipe()
    a, b = socket.socketpair()
    try:
        for config, kind in ((RelayConfig(), PipeBuffer),
                             (RelayConfig(recv_limit=3), MemoryBuffer)):
            relay = Relay(StdioStream(r, w), SocketStream(a, "a"), config, Reporter(io.StringIO()))
            assert isinstance(relay.down.buf, kind)
            relay.up.buf.close()
            relay.down.buf.close()
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


def test_a_listener_waits_for_a_bridge_just_started(monkeypatch):
    """Portable backend, stdin bridged (as on Windows): the peer's EOF comes
    with the connection, before the bridge's thread has passed on what
    already waited on stdin.  The listener's session (it ends at the
    network's end) still sends it: the relay waits for the bridge to settle,
    as poll() would have shown it that input at once."""
    import threading

    import pync.platform as platform
    from pync.platform import bridge
    from pync.platform.portable import PortableBackend
    from pync.relay.loop import Relay, RelayConfig

    plat = PortableBackend()
    plat._sockets_only = True  # bridge the pipe, as Windows' select() must
    monkeypatch.setattr(platform, "_current", plat)
    real_start = bridge.ReaderBridge.start

    def slow_start(self):  # a thread the scheduler runs late (10 ms < SETTLE)
        self.settled_at = time.monotonic() + bridge.SETTLE
        threading.Timer(0.01, real_start, args=(self,)).start()

    monkeypatch.setattr(bridge.ReaderBridge, "start", slow_start)
    in_r, in_w = os.pipe()
    os.write(in_w, b"hello\n")
    a, b = socket.socketpair()
    b.shutdown(socket.SHUT_WR)  # the peer is done at once
    local = StdioStream(in_r, None)
    try:
        relay = Relay(local, SocketStream(a, "net"), RelayConfig(end_at_net_eof=True),
                      Reporter(io.StringIO()))
        relay.run()
        a.shutdown(socket.SHUT_WR)
        b.settimeout(5)
        assert b.recv(100) == b"hello\n"
    finally:
        local.finish(flush=False)
        for fd in (in_r, in_w):
            os.close(fd)
        a.close()
        b.close()
