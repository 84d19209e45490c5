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
reset too, once what it had sent has been passed on: nothing received is
lost that can still be delivered.  ``idle`` (-w) ends a pair that moved
nothing for that long.
"""

from __future__ import annotations

import time

from ..platform import EVENT_READ, EVENT_WRITE, backend
from .buffers import new_buffer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

    from .hub import Hub, Timer
    from .streams import SocketStream

PAIR_BUFSIZE = 64 * 1024  # per direction where bytes go through memory
BURST = 4  # reads in a row from one side before the others get a turn


class Side:
    """One direction: src's input -> buffer -> dst's output."""

    __slots__ = ("buf", "dst", "dst_open", "head", "moved", "src", "src_open")

    def __init__(self, src: SocketStream, dst: SocketStream, head: bytes) -> None:
        self.src = src
        self.dst = dst
        self.buf = new_buffer(src, dst, False, memory_size=PAIR_BUFSIZE)
        self.head = bytearray(head)  # bytes that go first (a proxy's rewritten request)
        self.src_open = True
        self.dst_open = True
        self.moved = 0

    @property
    def empty(self) -> bool:
        return self.buf.empty and not self.head


class Pair:
    """Joins ``a`` and ``b`` (connected sockets, or TLS over them) both ways."""

    def __init__(self, hub: Hub, a: SocketStream, b: SocketStream, *,
                 idle: Optional[float] = None,
                 on_end: Optional[Callable[[Pair, str], None]] = None,
                 to_b: bytes = b"", to_a: bytes = b"") -> None:
        self.hub = hub
        self.a, self.b = a, b
        self.ab = Side(a, b, to_b)
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
        for stream in (a, b):
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
                self._write(side)
        self._step()

    # -- moving bytes ---------------------------------------------------------
    def _read(self, side: Side) -> None:
        if not side.src_open or not side.dst_open:
            return
        for _ in range(BURST):
            if not side.buf.room:
                return
            try:
                n = side.buf.fill(side.src)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._lost(side.src)
                return
            if n == 0:
                side.src_open = False
                return
            side.moved += n
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
        except OSError:
            self._lost(side.dst)

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
                if self.gone is None:
                    side.dst.shutdown_write()  # the other end sees EOF: it may still answer
        if self.gone is not None and self.ab.empty and self.ba.empty:
            self.end("reset")
            return
        if not self.ab.dst_open and not self.ba.dst_open:
            self.end("closed")
            return
        want: dict[int, int] = {}
        for side in (self.ab, self.ba):
            if side.src_open and side.dst_open and side.buf.room and side.src.read_fd is not None:
                want[side.src.read_fd] = want.get(side.src.read_fd, 0) | EVENT_READ
                if side.src.holds_bytes and side.src.pending():
                    self.hub.soon(self)  # TLS: decrypted bytes the socket no longer shows
            if side.dst_open and not side.empty and side.dst.write_fd is not None:
                want[side.dst.write_fd] = want.get(side.dst.write_fd, 0) | EVENT_WRITE
        for stream in (self.a, self.b):
            fd = stream.read_fd
            if fd is not None:
                self.hub.watch(fd, want.get(fd, 0), self)

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
        if self._timer is not None:
            self._timer.cancel()
        plat = backend()
        for stream in (self.a, self.b):
            self.hub.forget(stream.read_fd)
            if why == "reset" and stream is not self.gone:
                plat.abort(stream.sock)
            else:
                stream.close()
        for side in (self.ab, self.ba):
            side.buf.close()
        if self.on_end is not None:
            self.on_end(self, why)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started
