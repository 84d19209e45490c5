"""The portable backend: macOS, Windows, and any Python without epoll.

The relay is the same loop; what changes is how it waits and what it waits on:

* It waits with ``selectors.DefaultSelector``: kqueue on macOS and the
  BSDs, select() on Windows.  A descriptor the selector cannot take (on
  Windows anything but a socket: the console, pipes, files; elsewhere
  whatever ``register`` refuses) is bridged into a socketpair by one small
  thread (bridge.py).
* Every wait in the main thread also watches a wake-up socket that the
  signal machinery writes to (``signal.set_wakeup_fd``): on Windows,
  select() is not interrupted by ^C, and this is what ends it.
* Bytes are copied through memory (no splice or sendfile); no SO_RCVLOWAT
  batching (tuned for Linux's poll()).  The dialogue spin stays.
* ``-l -k -e`` workers are spawned (a new interpreter per connection),
  never forked: fork is missing on Windows and unsafe on macOS once a
  bridge thread runs.  Scans run in one process.
* select() takes at most 512 sockets on Windows (and descriptors below
  1024 elsewhere): a scan keeps fewer probes than that in flight.
"""

from __future__ import annotations

import os
import selectors
import socket
import stat
import subprocess
import sys

from .base import EVENT_READ, EVENT_WRITE, Backend, ProbeSet, Waiter, is_socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

SO_NWRITE = 0x1024  # macOS: bytes in a socket's send buffer (sent but unacknowledged too)
SELECT_CAPACITY = 500  # under Windows' 512-socket select(), with room for the loop's own


class _Wakeup:
    """The socket ``signal.set_wakeup_fd`` writes to when a signal comes."""

    def __init__(self) -> None:
        import signal

        self.sock: Optional[socket.socket] = None
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)
        try:
            old = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
        except ValueError:  # not the main thread: nothing to take over
            r.close()
            w.close()
            return
        if old != -1:  # somebody else's (an embedding event loop): leave it theirs
            signal.set_wakeup_fd(old)
            r.close()
            w.close()
            return
        self.sock, self._w = r, w

    def drain(self) -> None:
        assert self.sock is not None
        try:
            while self.sock.recv(512):
                pass
        except OSError:
            pass


_wakeup: Optional[_Wakeup] = None


def _wakeup_socket() -> Optional[socket.socket]:
    """The process's wake-up socket, made on first use in the main thread."""
    global _wakeup
    import threading

    if _wakeup is None or _wakeup.sock is None:
        if threading.current_thread() is not threading.main_thread():
            return None
        _wakeup = _Wakeup()
    return _wakeup.sock


class SelectorWaiter(Waiter):
    """selectors' default, plus the wake-up socket.

    It spins in a dialogue as Linux's poll does: measured with Linux's APIs
    hidden, a 1-byte ping-pong through a bridge took 1.2x nc's time without
    the spin and 1.0x with it.
    """

    spins = True

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake = _wakeup_socket()
        self._wake_fd = -1
        if self._wake is not None:
            self._sel.register(self._wake, EVENT_READ)
            self._wake_fd = self._wake.fileno()

    def register(self, fd: int, events: int) -> None:
        self._sel.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._sel.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self._sel.unregister(fd)

    def poll(self, timeout: Optional[float]) -> list[tuple[int, int]]:
        ready = []
        for key, events in self._sel.select(timeout):
            if key.fd == self._wake_fd:
                assert _wakeup is not None
                _wakeup.drain()  # the signal's handler runs when this returns
                continue
            ready.append((key.fd, events))
        return ready

    def close(self) -> None:
        self._sel.close()


class SelectorProbes(ProbeSet):
    """Scan probes in a selector: each unregistered before its socket closes."""

    def __init__(self, capacity: Optional[int]) -> None:
        self._sel = selectors.DefaultSelector()
        self.capacity = capacity

    def add(self, fd: int, writable: bool) -> None:
        self._sel.register(fd, EVENT_WRITE if writable else EVENT_READ)

    def forget(self, fd: int) -> None:
        self._sel.unregister(fd)

    def poll(self, timeout: float) -> list[int]:
        if not self._sel.get_map():  # select() on Windows refuses an empty set
            import time

            time.sleep(timeout)
            return []
        return [key.fd for key, _ in self._sel.select(timeout)]

    def close(self) -> None:
        self._sel.close()


def _select_takes_only_sockets() -> bool:
    """Whether this selector is select() and select() refuses a pipe (Windows)."""
    if selectors.DefaultSelector is not selectors.SelectSelector:
        return False
    import select

    r, w = os.pipe()
    try:
        select.select([r], [], [], 0)
    except OSError:
        return True
    finally:
        os.close(r)
        os.close(w)
    return False


def _regular_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _comspec() -> str:
    return os.environ.get("COMSPEC", "cmd.exe")


class PortableBackend(Backend):
    name = "portable"
    tos = hasattr(socket, "IP_TOS") and os.name != "nt"  # Windows ignores IP_TOS
    min_ttl = hasattr(socket, "IP_MINTTL")

    def __init__(self) -> None:
        self._sockets_only: Optional[bool] = None

    # -- waiting ----------------------------------------------------------
    def watch_signals(self) -> None:
        """The wake-up socket, made now rather than at the first wait."""
        _wakeup_socket()

    def waiter(self) -> Waiter:
        return SelectorWaiter()

    def probe_set(self) -> ProbeSet:
        select_based = selectors.DefaultSelector is selectors.SelectSelector
        return SelectorProbes(SELECT_CAPACITY if select_based else None)

    def can_wait(self, fd: int, events: int) -> bool:
        if is_socket(fd):
            return True
        if _regular_file(fd):
            # kqueue (macOS) reports a file readable only before its end,
            # never its end of file: a file is used as always ready instead.
            return False
        if self._sockets_only is None:
            self._sockets_only = _select_takes_only_sockets()
        if self._sockets_only:
            return False
        sel = selectors.DefaultSelector()
        try:
            sel.register(fd, events)
        except (OSError, ValueError):  # kqueue or poll refusing a device, say
            return False
        finally:
            sel.close()
        return True

    def unsent(self, sock: socket.socket) -> Optional[int]:
        """macOS says (SO_NWRITE); elsewhere unknown."""
        if sys.platform != "darwin":
            return None
        try:
            return sock.getsockopt(socket.SOL_SOCKET, SO_NWRITE)
        except OSError:
            return None

    # -- local ends -------------------------------------------------------
    def shell_argv(self, command: str) -> tuple[str, ...]:
        """/bin/sh -c where there is one, else the Windows shell (COMSPEC)."""
        if os.path.exists("/bin/sh"):
            return super().shell_argv(command)
        return (_comspec(), "/c", command)

    def start_child(self, argv: tuple[str, ...], env: dict[str, str]) -> subprocess.Popen:
        if len(argv) == 3 and argv[1] == "/c" and argv[0] == _comspec():
            # cmd.exe parses its own command line: hand it over as one
            # string, quoted as subprocess's shell=True does.
            return subprocess.Popen(f'{argv[0]} /c "{argv[2]}"', stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, close_fds=True, env=env)
        return super().start_child(argv, env)

    def binary(self, fd: int) -> None:
        try:
            import msvcrt
        except ImportError:  # not Windows: no text mode to undo
            return
        msvcrt.setmode(fd, os.O_BINARY)  # type: ignore[attr-defined,unused-ignore]
