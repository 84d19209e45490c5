"""A Pair: two connections joined both ways, in the hub's loop.

What the forwarder (-L) and the proxy server's tunnels are made of.  Each
direction is a bounded buffer between one connection's input and the
other's output, read only while it has room and written only while it has
data, so a slow side stops its partner from being read: memory stays
bounded per pair whatever the peers do.  On Linux the buffers are pipes of
pync's own and the bytes move by splice(), never copied into Python
(buffers.py decides, as for the relay).

End of stream is carried through: when one side's input ends and what it
sent has been written to the other, the other is shut for writing (FIN), so
``sort`` behind a forwarder still answers.  The pair is over when both
directions are; a side that resets (or refuses a write) gets its partner
reset too, once what it had sent has been passed on and has left the
socket (where the platform cannot tell, the partner is closed instead):
nothing received is lost that can still be delivered.  ``idle`` (-w) ends a pair that moved
nothing for that long.
"""

from __future__ import annotations

import time

from ..base.report import PyncError
from ..platform import EVENT_READ, EVENT_WRITE, backend
from .buffers import MemoryBuffer, PipeBuffer, new_buffer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

    from .hub import Hub, Timer
    from .streams import SocketStream

PAIR_BUFSIZE = 64 * 1024  # per direction where bytes go through memory
BURST = 4  # reads in a row from one side before the others get a turn
GROW_AFTER = 4 * 1024 * 1024  # bytes one way before its pipe is made larger
LINGER = 2.0  # seconds a served HTTP client may take to close
RESET_DRAIN = 5.0  # seconds a reset waits for what was sent before it to leave
RESET_POLL = 0.02
_DROPPED = memoryview(bytearray(PAIR_BUFSIZE))  # where bytes not to pass on are read


class Side:
    """One direction: src's input -> buffer -> dst's output.

    ``limit``, where set, is how many more bytes of src's input go on; after
    them what src sends is read and dropped (an HTTP request passed on, and
    the next request the client sends on that connection, which must not).
    """

    __slots__ = ("buf", "dst", "dst_open", "grown", "head", "limit", "moved", "src",
                 "src_open")

    def __init__(self, src: SocketStream, dst: SocketStream, head: bytes,
                 limit: Optional[int] = None) -> None:
        self.src = src
        self.dst = dst
        self.limit = limit
        if limit is None:
            self.buf = new_buffer(src, dst, False, memory_size=PAIR_BUFSIZE, pipe_grows=False)
        else:  # counted to the byte: read into memory, not spliced
            self.buf = MemoryBuffer(PAIR_BUFSIZE)
        self.head = bytearray(head)  # bytes that go first (a proxy's rewritten request)
        self.src_open = True
        self.dst_open = True
        self.moved = 0
        self.grown = False  # a bulk flow has its pipe made larger

    @property
    def empty(self) -> bool:
        return self.buf.empty and not self.head


class Pair:
    """Joins ``a`` and ``b`` (connected sockets, or TLS over them) both ways."""

    def __init__(self, hub: Hub, a: SocketStream, b: SocketStream, *,
                 idle: Optional[float] = None,
                 on_end: Optional[Callable[[Pair, str], None]] = None,
                 to_b: bytes = b"", to_a: bytes = b"", limit_to_b: Optional[int] = None) -> None:
        self.hub = hub
        self.a, self.b = a, b
        self.ab = Side(a, b, to_b, limit_to_b)
        try:
            self.ba = Side(b, a, to_a)
        except BaseException:
            self.ab.buf.close()
            raise
        self.idle = idle
        self.on_end = on_end
        self.started = self.last_io = time.monotonic()
        self.ended = ""     # why it ended, once it has
        self.gone: Optional[SocketStream] = None  # a side that reset: its partner follows
        self._timer: Optional[Timer] = None
        self._linger: Optional[Timer] = None
        for stream in (a, b):
            stream.close_wait = 0.0  # a TLS close_notify goes when there is room
            stream.start()
        self._arm_idle()
        self._step()

    # -- the hub's calls ------------------------------------------------------
    def on_ready(self, fd: Optional[int], events: int) -> None:
        if self.ended:
            return
        for side in (self.ab, self.ba):
            if events & EVENT_READ and (fd is None or fd == side.src.read_fd):
                self._read(side)
            if events & EVENT_WRITE and fd == side.dst.write_fd:
                if side.dst_open:
                    self._write(side)
                elif side.dst.closing() & EVENT_WRITE:
                    self._close_more(side.dst)
        self._step()

    # -- moving bytes ---------------------------------------------------------
    def _read(self, side: Side) -> None:
        if not side.src_open or not side.dst_open:
            return
        for _ in range(BURST):
            if not side.buf.room:
                return
            try:
                if side.limit == 0:
                    n = side.src.read_into(_DROPPED)  # past what goes on: dropped
                    if n:
                        continue
                else:
                    n = side.buf.fill(side.src, side.limit) if side.limit is not None \
                        else side.buf.fill(side.src)
            except (BlockingIOError, InterruptedError):
                return
            except (OSError, PyncError):  # a reset; a TLS alert (PyncError)
                self._lost(side.src)
                return
            if n == 0:
                side.src_open = False
                return
            side.moved += n
            if side.limit is not None:
                side.limit -= n
            if not side.grown and side.moved >= GROW_AFTER and isinstance(side.buf, PipeBuffer):
                side.grown = True
                side.buf.grow()  # a bulk flow: fewer system calls per byte
            self.last_io = time.monotonic()
            self._write(side)

    def _write(self, side: Side) -> None:
        if not side.dst_open:
            return
        try:
            while side.head:
                n = side.dst.write(memoryview(side.head))
                del side.head[:n]
                side.moved += n
            while not side.buf.empty:
                if not side.buf.drain(side.dst):
                    return
                self.last_io = time.monotonic()
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, PyncError):
            self._lost(side.dst)

    def _close_more(self, stream: SocketStream) -> None:
        """Send more of what ends the stream (TLS: close_notify, then FIN)."""
        try:
            stream.shutdown_write()
        except (OSError, PyncError):
            self._lost(stream)

    def _lost(self, stream: SocketStream) -> None:
        """A side reset, or refused a write: it takes nothing more, sends
        nothing more; its partner gets what it had sent, then a reset."""
        if self.gone is None:
            self.gone = stream
        for side in (self.ab, self.ba):
            if side.src is stream:
                side.src_open = False
            if side.dst is stream:
                side.dst_open = False
                side.buf.clear()
                side.head.clear()

    def _step(self) -> None:
        """Pass on ends of stream, end the pair when both ways are done,
        and tell the hub what to wait for."""
        if self.ended:
            return
        for side in (self.ab, self.ba):
            if not side.src_open and side.empty and side.dst_open:
                side.dst_open = False
                if self.gone is None:  # the other end sees EOF: it may still answer
                    self._close_more(side.dst)
        if self.gone is not None and self.ab.empty and self.ba.empty:
            self.end("reset")
            return
        if not self.ab.dst_open and not self.ba.dst_open and not any(
                s.closing() for s in (self.a, self.b)):
            self.end("closed")
            return
        if self.ab.limit == 0 and not self.ba.dst_open and self._linger is None:
            # A request passed on is answered and the client told (FIN): what
            # it may still send is dropped until it closes, bounded.
            self._linger = self.hub.call_at(time.monotonic() + LINGER,
                                            lambda: self.end("closed"), self)
        want: dict[int, int] = {}
        for side in (self.ab, self.ba):
            if side.src_open and side.dst_open and side.buf.room and side.src.read_fd is not None:
                want[side.src.read_fd] = want.get(side.src.read_fd, 0) | EVENT_READ
                if side.src.holds_bytes and side.src.pending():
                    self.hub.soon(self)  # TLS: decrypted bytes the socket no longer shows
            if side.dst.write_fd is not None and (
                    (side.dst_open and not side.empty)
                    or (not side.dst_open and self.gone is None
                        and side.dst.closing() & EVENT_WRITE)):
                want[side.dst.write_fd] = want.get(side.dst.write_fd, 0) | EVENT_WRITE
        for stream in (self.a, self.b):
            fd = stream.read_fd
            if fd is not None:
                self.hub.watch(fd, want.get(fd, 0), self)

    def failed(self, exc: BaseException) -> None:
        """Something no side's error explains: both sides end with a reset
        (each once what it was given has left)."""
        self.end("reset")

    # -- ending ---------------------------------------------------------------
    def _arm_idle(self) -> None:
        if self.idle is not None and not self.ended:
            self._timer = self.hub.call_at(self.last_io + self.idle, self._idle_check)

    def _idle_check(self) -> None:
        if self.ended:
            return
        if time.monotonic() - self.last_io >= self.idle:  # type: ignore[operator]
            self.end("timed out")
        else:
            self._arm_idle()

    def end(self, why: str) -> None:
        """Close both sides (a reset side's partner with a reset too) and say why."""
        if self.ended:
            return
        self.ended = why
        for timer in (self._timer, self._linger):
            if timer is not None:
                timer.cancel()
        for stream in (self.a, self.b):
            self.hub.forget(stream.read_fd)
            if why == "reset" and stream is not self.gone:
                self._abort_once_sent(stream, time.monotonic() + RESET_DRAIN)
            else:
                stream.close()
        for side in (self.ab, self.ba):
            side.buf.close()
        if self.on_end is not None:
            self.on_end(self, why)

    def _abort_once_sent(self, stream: SocketStream, deadline: float) -> None:
        """Reset stream once what it was given has left (a reset throws
        away what is still queued), or at the deadline.  Where the platform
        cannot say what is still queued, it is closed instead: the peer sees
        an end of stream, not a reset, but gets every byte."""
        plat = backend()
        unsent = plat.unsent(stream.sock)
        if unsent is None:
            stream.close()
        elif unsent > 0 and time.monotonic() < deadline:
            self.hub.call_at(time.monotonic() + RESET_POLL,
                             lambda: self._abort_once_sent(stream, deadline), self)
        else:
            plat.abort(stream.sock)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started
