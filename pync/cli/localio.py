"""pync's stdin and stdout for one ``run()``: descriptors, or pipes fed by threads.

The relay works on file descriptors.  A library caller may hand ``run()``
``bytes`` or an ``io.BytesIO`` instead: each becomes one end of a pipe
whose other end a thread feeds (input) or drains (output).  The threads
move bytes while the relay runs, so input and output of any size go
through without either side waiting on the other (no deadlock), and
they are finished before ``run()`` returns.
"""

from __future__ import annotations

import io
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional

CHUNK = 1 << 16


def _descriptor(stream: Any) -> Optional[int]:
    """The stream's file descriptor, or None if it has none (BytesIO)."""
    try:
        return stream.fileno()
    except (AttributeError, io.UnsupportedOperation, OSError, ValueError):
        return None


class LocalIO:
    """Context manager: ``in_fd()`` and ``out_fd`` for the run, threads joined at exit."""

    def __init__(self, stdin: Any = None, stdout: Any = None) -> None:
        self._stdin = stdin
        self._own: list[int] = []  # pipe ends pync holds, closed at exit
        self._threads: list[Any] = []
        fd = 1 if stdout is None else _descriptor(stdout)
        if fd is None:
            r, w = os.pipe()
            self._own.append(w)
            self._start(_drain, r, stdout)
            fd = w
        self.out_fd = fd

    def in_fd(self) -> int:
        """pync's input descriptor (a feeding thread starts only when asked)."""
        stdin = self._stdin
        if stdin is None:
            return 0
        fd = None if isinstance(stdin, (bytes, bytearray, memoryview)) else _descriptor(stdin)
        if fd is not None:
            return fd
        r, w = os.pipe()
        self._own.append(r)
        self._start(_feed, w, stdin)
        return r

    def _start(self, target: Any, fd: int, stream: Any) -> None:
        import threading  # only library calls with bytes or BytesIO need it

        thread = threading.Thread(target=target, args=(fd, stream), daemon=True,
                                  name="pync-" + target.__name__.strip("_"))
        thread.start()
        self._threads.append(thread)

    def __enter__(self) -> LocalIO:
        return self

    def __exit__(self, *exc: object) -> None:
        # Closing our ends ends the threads: the feeder gets EPIPE, the
        # drainer end of file once every writer (pync) has closed.
        for fd in self._own:
            os.close(fd)
        for thread in self._threads:
            thread.join()


def _feed(fd: int, data: Any) -> None:
    """Write bytes (or a readable object's contents) into the pipe, then close it."""
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view[:CHUNK]):]
        else:
            while True:
                chunk = data.read(CHUNK)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
    except OSError:
        pass  # pync stopped reading (EPIPE): the rest is not wanted
    finally:
        os.close(fd)


def _drain(fd: int, out: Any) -> None:
    """Copy everything from the pipe into the writable object.

    If the object refuses a write, the rest is read and dropped: pync must
    never block on a pipe nobody empties.
    """
    try:
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            if out is not None:
                try:
                    out.write(chunk)
                except (OSError, ValueError):
                    out = None
    finally:
        os.close(fd)
