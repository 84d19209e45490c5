"""--progress: a pv-style meter on stderr, and the -vv closing summary.

The relay calls ``Meter.tick`` from its loop, at most ``RATE`` times a
second (a deadline among its timers, never a thread), with the bytes sent
and received so far.  The meter redraws one line with ``\\r``: bytes each
way, elapsed time, the current rate, and — when stdin is a regular file of
known size — a bar, the percentage and the time left.
"""

from __future__ import annotations

import os
import stat
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Optional

RATE = 4  # redraws per second, at most
WIDTH = 20  # characters in the bar


def human(n: float) -> str:
    """Bytes in binary units, three significant digits: ``512B``, ``1.50MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            break
        n /= 1024
    if unit == "B":
        return f"{int(n)}B"
    return f"{n:.2f}{unit}" if n < 10 else f"{n:.1f}{unit}" if n < 100 else f"{n:.0f}{unit}"


def clock(seconds: float) -> str:
    """``H:MM:SS``, as pv shows time."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def input_size(fd: Optional[int]) -> Optional[int]:
    """Bytes left to read on fd, if it is a regular file; else None."""
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        return max(st.st_size - os.lseek(fd, 0, os.SEEK_CUR), 0)
    except OSError:
        return None


class Meter:
    """One line on a terminal, redrawn in place."""

    def __init__(self, stream: IO[str], total: Optional[int] = None) -> None:
        self.stream = stream
        self.total = total
        self.start = time.monotonic()
        self.due = self.start + 1 / RATE
        self._last = (self.start, 0)  # for the current rate
        self._width = 0

    def line(self, sent: int, received: int, now: float) -> str:
        """The meter's text for these counts at this time."""
        elapsed = now - self.start
        then, moved = self._last
        rate = (sent + received - moved) / (now - then) if now > then else 0.0
        text = (f"{human(sent)} sent, {human(received)} received "
                f"{clock(elapsed)} [{human(rate)}/s]")
        if self.total:
            done = min(sent / self.total, 1.0)
            bar = "=" * int(done * WIDTH)
            bar = (bar + ">" if len(bar) < WIDTH else bar).ljust(WIDTH)
            text += f" [{bar}] {done * 100:3.0f}%"
            average = sent / elapsed if elapsed > 0 else 0
            if done < 1 and average > 0:
                text += f" ETA {clock((self.total - sent) / average)}"
        return text

    def tick(self, sent: int, received: int, now: float) -> None:
        """Redraw (the relay calls this when ``due``)."""
        text = self.line(sent, received, now)
        self._last = (now, sent + received)
        self.due = now + 1 / RATE
        self._draw(text)

    def finish(self, sent: int, received: int) -> None:
        """The last redraw, and the line ended."""
        now = time.monotonic()
        self._last = (self.start, 0)  # the closing rate is the average
        self._draw(self.line(sent, received, now))
        self._write("\n")

    def _draw(self, text: str) -> None:
        pad = " " * max(self._width - len(text), 0)
        self._width = len(text)
        self._write("\r" + text + pad)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr gone: nothing to show
