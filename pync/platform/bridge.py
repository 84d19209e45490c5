"""Bridges: a descriptor the event loop cannot wait on, made into a socket it can.

On Windows select() waits on sockets only: the console, a pipe (stdin or
stdout redirected, a child's stdin and stdout) and a file cannot be in the
relay's wait.  A bridge is one ``socket.socketpair()`` and one small thread:
the loop uses the near end like any non-blocking socket, the thread copies
between the far end and the descriptor, at most CHUNK bytes at a time.

* ReaderBridge (descriptor -> loop): from ``start()`` on (not before: a
  password prompt may need the terminal first), the thread reads a chunk
  and sends all of it to the far end, which blocks while the loop has not
  taken what came before (back-pressure: nothing is held but that chunk).  At the
  descriptor's end (or a read error, a hung-up terminal) the thread closes
  the far end: the loop reads EOF after the last byte.
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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

CHUNK = 128 * 1024  # the most a bridge holds in hand, as the relay's own buffers
# A reader bridge's first moments: what was waiting in the descriptor when
# the loop started is on its way through the thread.  A loop that would end
# for another reason (a listener at the network's end) waits this long first,
# as poll() would have shown it that input at once.
SETTLE = 0.05


def _pair() -> tuple[socket.socket, socket.socket]:
    """(near, far): the loop's end, non-blocking, and the thread's, blocking."""
    near, far = socket.socketpair()
    near.setblocking(False)
    far.setblocking(True)
    return near, far


class ReaderBridge:
    """fd -> socket: the loop reads ``sock``."""

    def __init__(self, fd: int, done: Optional[Callable[[], None]] = None) -> None:
        self.sock, self._far = _pair()
        self._fd = fd
        self._done = done
        self.settled_at = 0.0  # until then, input already waiting may still come
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"pync-bridge-from-{fd}")

    def start(self) -> None:
        """Begin reading the descriptor (once)."""
        if self._thread.ident is None:
            self.settled_at = time.monotonic() + SETTLE
            self._thread.start()

    def _run(self) -> None:
        far = self._far
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        source = io.FileIO(self._fd, "rb", closefd=False)
        try:
            while True:
                try:
                    n = source.readinto(view)
                except OSError:
                    break  # EIO from a hung-up terminal, EBADF: the end
                if not n:
                    break
                far.sendall(view[:n])  # blocks while the loop is behind
        except OSError:
            pass  # the loop closed its end: nobody wants the rest
        finally:
            far.close()  # the loop reads EOF after what was sent
            if self._done is not None:
                self._done()

    def close(self, timeout: Optional[float] = 0.0) -> None:
        """Stop: the thread ends at its next send (or at the descriptor's end)."""
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
        sink = io.FileIO(self._fd, "wb", closefd=False)
        try:
            while True:
                n = far.recv_into(view)
                if not n:
                    break  # the loop half-closed: all it sent is written
                chunk = view[:n]
                while chunk:
                    written = sink.write(chunk)  # the descriptor blocks: never None
                    chunk = chunk[written or 0:]
        except OSError:
            pass  # EPIPE: the descriptor's reader is gone
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
