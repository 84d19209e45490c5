"""Bridges (platform/bridge.py): bounded, never hung, and what Windows needs.

The bridges carry a descriptor the loop cannot wait on (Windows: anything
but a socket) through one thread and a socketpair.  Here: what they hold is
bounded however small the reads; a descriptor they cannot read ends the
stream instead of hanging it; a TCP socketpair (Windows') has Nagle off; a
regular file is used as always ready (kqueue never reports its end).
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import tempfile
import threading

from pynctest import PORTABLE_SITE, TIMEOUT

from pync.platform.bridge import CHUNK, QUEUED, QUEUED_ITEMS, ReaderBridge
from pync.platform.portable import PortableBackend


def _held(bridge: ReaderBridge) -> int:
    """The memory the queue's chunks keep alive."""
    return sum(len(chunk.obj) for chunk in bridge._queue)


def test_small_reads_hold_little_when_the_loop_is_behind():
    """A line at a time and nobody taking them: the bridge stops reading at
    its bound, and small reads keep only their own bytes."""
    r, w = os.pipe()
    bridge = ReaderBridge(r)
    bridge.start()
    os.set_blocking(w, False)
    line = b"seventeen bytes!\n"
    writes = 0
    try:
        deadline = threading.Event()
        for _ in range(200_000):
            try:
                os.write(w, line)
                writes += 1
            except BlockingIOError:  # the pipe is full: the bridge stopped reading
                # At its bound: a next read (up to CHUNK) would pass QUEUED.
                if len(bridge._queue) >= QUEUED_ITEMS or bridge._queued > QUEUED - CHUNK:
                    break
                deadline.wait(0.001)  # sleep-ok: let the bridge's thread drain the pipe
        assert len(bridge._queue) <= QUEUED_ITEMS
        assert bridge._queued <= QUEUED
        assert _held(bridge) <= 2 * QUEUED  # not 128 KiB a line
        assert writes < 200_000
    finally:
        bridge.close()
        os.close(w)
        os.close(r)


def test_a_descriptor_that_cannot_be_read_ends_the_stream():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    bridge = ReaderBridge(r)  # closed: the thread's first read fails
    bridge.start()
    try:
        select.select([bridge.sock], [], [], TIMEOUT)
        view = memoryview(bytearray(10))
        for _ in range(3):  # the signal, then the end
            try:
                if bridge.read_into(view) == 0:
                    break
            except BlockingIOError:
                select.select([bridge.sock], [], [], TIMEOUT)
        else:
            raise AssertionError("no end of stream")
    finally:
        bridge.close()


def test_a_regular_file_is_used_as_always_ready():
    with tempfile.TemporaryFile() as f:
        assert not PortableBackend().can_wait(f.fileno(), 1)
    a, b = socket.socketpair()
    with a, b:
        assert PortableBackend().can_wait(a.fileno(), 1)


def test_windows_tcp_socketpairs_have_nagle_off():
    """With Linux's APIs hidden, socketpair() is two TCP sockets, as on Windows."""
    code = ("import socket\nfrom pync.platform.bridge import _pair\nnear, far = _pair()\n"
            "print(near.family == socket.AF_INET, "
            "near.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), "
            "far.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (PORTABLE_SITE, os.environ.get("PYTHONPATH")) if p)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=TIMEOUT, env=env)
    assert r.stdout.split() == ["True", "1", "1"], r.stderr
