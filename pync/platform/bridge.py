"""Bridges: a descriptor the event loop cannot wait on, made into a socket it can.

On Windows select() waits on sockets only: the console, a pipe (stdin or
stdout redirected, a child's stdin and stdout) and a file cannot be in the
relay's wait.  A bridge is one ``socket.socketpair()`` and one small thread:
the loop waits on the near end like any non-blocking socket, the thread
moves the bytes between the descriptor and the loop, at most CHUNK at a time.

* ReaderBridge (descriptor -> loop): from ``start()`` on (not before: a
  password prompt may need the terminal first), the thread reads chunks
  into a bounded queue in memory and wakes the loop through the socketpair;
  when the queue is full it waits for the loop (back-pressure).  At the
  descriptor's end (or a read error, a hung-up terminal) the thread closes
  its end of the pair: the loop reads EOF after the last byte.
* WriterBridge (loop -> descriptor): the thread receives what the loop sent
  and writes all of it to the descriptor.  When the loop half-closes its
  end, the thread writes what is left, then calls ``done`` (which closes a
  child's stdin, so the child sees EOF) and ends.  If the descriptor
  refuses (EPIPE: its reader is gone) the thread closes the far end and the
  loop's next write fails, as a write to the descriptor would have.
  ``close()`` waits for the thread: every byte handed to the bridge is
  written before pync exits.

Threads are daemons: one blocked reading a console must not keep pync
alive after the session is over.  No other threads are started for I/O;
timers stay in the loop.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections import deque

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

CHUNK = 128 * 1024  # one read or write of a bridge's thread, as the relay's buffers
QUEUED = 8 * CHUNK  # the most a reader bridge holds before the loop takes it...
QUEUED_ITEMS = 1024  # ... and in how many reads (small ones keep only their bytes)
SIGNALS_MAX = 256  # more one-byte wake-ups than can wait: one per empty queue filled
# A reader bridge's first moments: what was waiting in the descriptor when
# the loop started is on its way through the thread.  A loop that would end
# for another reason (a listener at the network's end) waits this long first,
# as poll() would have shown it that input at once.
SETTLE = 0.05


def _pair() -> tuple[socket.socket, socket.socket]:
    """(near, far): the loop's end, non-blocking, and the thread's, blocking.

    Where socketpair() is two TCP sockets (Windows), Nagle is off on both:
    each carries small writes one way only, the pattern that otherwise
    waits for a delayed acknowledgement.
    """
    near, far = socket.socketpair()
    near.setblocking(False)
    far.setblocking(True)
    if near.family in (socket.AF_INET, socket.AF_INET6):
        for end in (near, far):
            end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return near, far


class ReaderBridge:
    """fd -> loop: the loop waits on ``sock`` and calls ``read_into``.

    The thread reads chunks into a queue in memory (at most QUEUED bytes:
    then it waits for the loop to take some), and tells the loop by one byte
    on the socketpair when the queue stops being empty; at the descriptor's
    end it closes its end of the pair.  So the bytes are copied once, from
    the descriptor to memory, not again through a socket; ``pending()`` says
    when the queue still holds bytes the socket no longer signals.
    """

    def __init__(self, fd: int, done: Optional[Callable[[], None]] = None) -> None:
        self.sock, self._far = _pair()
        self._fd = fd
        self._done = done
        self.settled_at = 0.0  # until then, input already waiting may still come
        self._queue: deque[memoryview] = deque()
        self._free: list[Any] = []  # buffers the loop has emptied, to read into again
        self._signals = bytearray(SIGNALS_MAX)
        self._queued = 0
        self._ended = False    # the thread will add nothing more
        self._closed = False   # the loop is gone
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"pync-bridge-from-{fd}")

    def start(self) -> None:
        """Begin reading the descriptor (once)."""
        if self._thread.ident is None:
            self.settled_at = time.monotonic() + SETTLE
            self._thread.start()

    def _run(self) -> None:
        cond = self._cond
        buf = bytearray(CHUNK)
        try:
            source = io.FileIO(self._fd, "rb", closefd=False)
            while True:
                try:
                    n = source.readinto(buf)
                except OSError:
                    break  # EIO from a hung-up terminal, EBADF: the end
                if not n:
                    break
                if n >= CHUNK // 2:  # a large read: hand the buffer over, take another
                    chunk = memoryview(buf)[:n]
                    with cond:
                        buf = self._free.pop() if self._free else bytearray(CHUNK)
                else:  # a small one keeps just its bytes (a line from a terminal)
                    chunk = memoryview(bytes(buf[:n]))
                with cond:
                    while ((self._queued + n > QUEUED or len(self._queue) >= QUEUED_ITEMS)
                           and not self._closed):
                        cond.wait()  # back-pressure: the loop is behind (n <= CHUNK < QUEUED)
                    if self._closed:
                        return
                    was_empty = not self._queue
                    self._queue.append(chunk)
                    self._queued += n
                if was_empty:
                    self._far.send(b"\0")  # the loop drains these before reading
        except (OSError, ValueError):
            pass  # the loop closed its end (or the descriptor is no file): the end
        finally:
            with cond:
                self._ended = True
            self._far.close()  # the loop sees its end after the last byte
            if self._done is not None:
                self._done()

    def read_into(self, buf: memoryview) -> int:
        """What the queue holds (as much as fits), 0 at the end, else
        BlockingIOError: a socket's read, for the relay."""
        ended = False
        try:  # the signals first: one sent after is not lost
            ended = not self.sock.recv_into(self._signals)
        except (BlockingIOError, InterruptedError):
            pass
        with self._cond:
            if self._queue:
                n = 0
                while self._queue and n < len(buf):
                    chunk = self._queue[0]
                    take = min(len(chunk), len(buf) - n)
                    buf[n:n + take] = chunk[:take]
                    n += take
                    if take == len(chunk):
                        self._queue.popleft()
                        if isinstance(chunk.obj, bytearray) and len(self._free) < 2:
                            self._free.append(chunk.obj)  # to be read into again
                    else:
                        self._queue[0] = chunk[take:]
                self._queued -= n
                self._cond.notify()
                return n
            if ended and self._ended:
                return 0
        raise BlockingIOError

    def pending(self) -> bool:
        """Bytes in the queue that no signal on the socket announces."""
        return bool(self._queue)

    def close(self, timeout: Optional[float] = 0.0) -> None:
        """Stop: the thread ends at its next chunk (or at the descriptor's end)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self.sock.close()
        if self._thread.ident is None:
            self._far.close()
        elif timeout is None or timeout > 0:
            self._thread.join(timeout)


class WriterBridge:
    """socket -> fd: the loop writes ``sock``."""

    def __init__(self, fd: int, done: Optional[Callable[[], None]] = None) -> None:
        self.sock, self._far = _pair()
        self._fd = fd
        self._done = done
        self._finished = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"pync-bridge-to-{fd}")
        self._thread.start()

    def _run(self) -> None:
        far = self._far
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            sink = io.FileIO(self._fd, "wb", closefd=False)
            while True:
                n = far.recv_into(view)
                if not n:
                    break  # the loop half-closed: all it sent is written
                chunk = view[:n]
                while chunk:
                    written = sink.write(chunk)  # the descriptor blocks: never None
                    chunk = chunk[written or 0:]
        except (OSError, ValueError):
            pass  # EPIPE: the descriptor's reader is gone (or it is no file)
        finally:
            far.close()  # the loop's next write fails: its destination is gone
            if self._done is not None:
                try:
                    self._done()
                except OSError:
                    pass

    def finish(self) -> None:
        """No more bytes: the thread writes what it has, then ends."""
        if not self._finished:
            self._finished = True
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the thread already ended (the descriptor refused)

    def close(self, timeout: Optional[float] = None) -> None:
        """Finish and wait (bounded by timeout) until every byte is written."""
        self.finish()
        self._thread.join(timeout)
        self.sock.close()
