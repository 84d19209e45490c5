"""Fault-injection helpers: a misbehaving TCP relay and /proc probes.

``ChaosRelay`` sits between pync and its peer on 127.0.0.1 and relays one
connection, but on its own terms: it cuts the bytes into 1-byte or
random-sized writes, waits between them, and resets (RST) the connection
after a chosen number of bytes has gone one way.  Before a reset it waits
until the receiver's kernel has acknowledged every byte written (the send
queue is empty): those bytes have *arrived*, and must not be lost.

Every wait is bounded (pynctest.TIMEOUT).  Injected delays are the fault
under test, not synchronisation.
"""

from __future__ import annotations

import fcntl
import random
import selectors
import socket
import struct
import termios
import threading
import time
from typing import Optional

from pynctest import (  # noqa: F401  (the /proc helpers, for the fault tests)
    TIMEOUT,
    children_of,
    descendants,
    open_fds,
    state,
    vm_rss_kib,
    wait_until,
)

A2B = "a2b"  # from the side that connected to the relay to the relay's target
B2A = "b2a"


def send_queue(sock: socket.socket) -> int:
    """Bytes written to sock that the receiver has not acknowledged yet."""
    raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return struct.unpack("i", raw)[0]


def reset(sock: socket.socket) -> None:
    """Close sock with an RST instead of a FIN (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def wait_acked(sock: socket.socket, timeout: float = TIMEOUT) -> None:
    """Block (bounded) until everything written to sock was acknowledged."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while send_queue(sock):
        if time.monotonic() > deadline:
            raise AssertionError("receiver never acknowledged the bytes sent")
        tick.wait(0.001)  # sleep-ok: bounded poll of the kernel's send queue


class _Way:
    """One direction through the relay."""

    def __init__(self, name: str, src: socket.socket, dst: socket.socket) -> None:
        self.name = name
        self.src = src
        self.dst = dst
        self.pending = bytearray()
        self.src_open = True
        self.dst_open = True
        self.sent = 0
        self.next_at = 0.0


class ChaosRelay:
    """Relay one TCP connection from a client to 127.0.0.1:target, badly.

    ``split``: "whole" (write what was read), "bytes" (1-byte writes) or
    "random" (writes of 1..max_piece bytes).  ``delay``: up to this many
    seconds between writes (exactly this many with ``steady``).
    ``reset_after``: after that many bytes went ``reset_way`` (A2B or B2A)
    and were acknowledged, the connection on ``reset_side`` ("a": the client
    of the relay, "b": its target) is reset and the other one closed.
    ``delivered`` counts the bytes written each way; ``did_reset`` says
    whether the reset happened; ``errors`` holds what went wrong in the thread.
    ``hold``: once the client is accepted, nothing is relayed until this
    event is set (bounded): a test sets it when pync says it is connected,
    so that a reset "at once" comes after pync's connect() completed, not in
    the race nc loses too (its connect then reads "reset by peer").
    """

    def __init__(self, target: int, *, split: str = "whole", max_piece: int = 4096,
                 delay: float = 0.0, steady: bool = False,
                 reset_after: Optional[int] = None,
                 reset_way: str = B2A, reset_side: str = "a", seed: int = 0,
                 hold: Optional[threading.Event] = None) -> None:
        self.target = target
        self.hold = hold
        self.split = split
        self.max_piece = max_piece
        self.delay = delay
        self.steady = steady
        self.reset_after = reset_after
        self.reset_way = reset_way
        self.reset_side = reset_side
        self.rng = random.Random(seed)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self.did_reset = False
        self.delivered = {A2B: 0, B2A: 0}
        self._pause = threading.Event()  # never set: its wait() is a bounded pause
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    # -- the thread --------------------------------------------------------
    def _run(self) -> None:
        try:
            self.listener.settimeout(TIMEOUT)
            a, _ = self.listener.accept()
            if self.hold is not None:
                self.hold.wait(TIMEOUT)
            b = socket.create_connection(("127.0.0.1", self.target), timeout=TIMEOUT)
            try:
                self._relay(a, b)
            finally:
                for s in (a, b):
                    if s.fileno() >= 0:
                        s.close()
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.listener.close()

    def _piece(self, way: _Way) -> int:
        size = len(way.pending)
        if self.split == "bytes":
            size = 1
        elif self.split == "random":
            size = min(size, self.rng.randint(1, self.max_piece))
        if self.reset_after is not None and way.name == self.reset_way:
            size = min(size, self.reset_after - way.sent)
        return size

    def _due_reset(self, way: _Way) -> bool:
        return (self.reset_after is not None and way.name == self.reset_way
                and way.sent >= self.reset_after)

    def _reset(self, a: socket.socket, b: socket.socket, way: _Way) -> None:
        wait_acked(way.dst)
        victim, other = (a, b) if self.reset_side == "a" else (b, a)
        reset(victim)
        other.close()
        self.did_reset = True

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        for s in (a, b):
            s.setblocking(False)
        ways = [_Way(A2B, a, b), _Way(B2A, b, a)]
        deadline = time.monotonic() + TIMEOUT
        with selectors.DefaultSelector() as sel:
            while any(w.src_open or (w.pending and w.dst_open) for w in ways):
                for way in ways:
                    if self._due_reset(way):
                        self._reset(a, b, way)
                        return
                now = time.monotonic()
                if now > deadline:
                    raise AssertionError("chaos relay still busy at its deadline")
                want: dict[socket.socket, int] = {}
                wake = deadline
                for way in ways:
                    if way.src_open and len(way.pending) < 65536:
                        want[way.src] = want.get(way.src, 0) | selectors.EVENT_READ
                    if way.pending and way.dst_open:
                        if way.next_at > now:
                            wake = min(wake, way.next_at)
                        else:
                            want[way.dst] = want.get(way.dst, 0) | selectors.EVENT_WRITE
                for key in list(sel.get_map().values()):
                    sel.unregister(key.fileobj)
                for s, ev in want.items():
                    sel.register(s, ev)
                if not want:
                    self._pause.wait(max(0.0, wake - now))  # sleep-ok: injected delay
                    continue
                ready = {key.fileobj: ev for key, ev in sel.select(max(0.0, wake - now))}
                for way in ways:
                    if ready.get(way.src, 0) & selectors.EVENT_READ and way.src_open:
                        self._read(way)
                    if ready.get(way.dst, 0) & selectors.EVENT_WRITE and way.pending:
                        self._write(way)

    def _read(self, way: _Way) -> None:
        try:
            data = way.src.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            way.pending += data
            return
        way.src_open = False
        if not way.pending:
            self._end(way)

    def _write(self, way: _Way) -> None:
        size = self._piece(way)
        if size <= 0:
            return
        try:
            n = way.dst.send(way.pending[:size])
        except BlockingIOError:
            return
        except OSError:
            way.dst_open = False
            way.pending.clear()
            return
        del way.pending[:n]
        way.sent += n
        self.delivered[way.name] = way.sent
        if self.delay:
            pause = self.delay if self.steady else self.rng.uniform(0, self.delay)
            way.next_at = time.monotonic() + pause
        if not way.src_open and not way.pending:
            self._end(way)

    def _end(self, way: _Way) -> None:
        """The source ended and everything went out: pass the EOF on."""
        try:
            way.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def join(self, timeout: float = TIMEOUT) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "chaos relay thread still running"
        if self.errors:
            raise self.errors[0]


def wait_send_blocked(sock: socket.socket, timeout: float = TIMEOUT) -> None:
    """Until sock's unacknowledged send queue is non-empty and stops moving:
    the receiver has stopped reading and every buffer on the way is full."""
    last = [-1, 0]

    def steady() -> bool:
        now = send_queue(sock)
        last[1] = last[1] + 1 if now == last[0] and now > 0 else 0
        last[0] = now
        return last[1] >= 5

    wait_until(steady, timeout, what="the sender to block on a full socket")
