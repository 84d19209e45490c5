"""What differs between Linux, macOS and Windows, behind one interface.

Everything that depends on the platform — how the relay waits, how bytes
move, how children and workers start, which signals exist, terminals — is
a method of the Backend that ``backend()`` picks once, by what this
interpreter offers (``hasattr``), never by ``sys.platform``:

* ``linux`` (linux.py), wherever ``select.epoll`` exists: bare poll() for
  the relay, epoll for scans, splice() and sendfile() for zero-copy
  transfers, SO_RCVLOWAT batching, the dialogue spin, fork() for workers.
* ``portable`` (portable.py), everywhere else: the ``selectors`` default
  (kqueue on macOS, select() on Windows); a descriptor that selector cannot
  wait on (on Windows anything but a socket: the console, pipes, a child's
  pipes, files) is bridged into a socketpair by one small thread
  (bridge.py); workers are spawned, not forked.

The modes, the relay's end-of-stream logic, the parsers and the messages
call only what base.Backend defines, so they are the same everywhere.  This
package is the only one that touches platform-specific calls (a test
checks it).
"""

from __future__ import annotations

from .events import EVENT_READ, EVENT_WRITE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

    from .base import Backend

_current: Optional[Backend] = None


def backend() -> Backend:
    """The Backend for this interpreter, chosen on first use."""
    global _current
    if _current is None:
        import select

        if hasattr(select, "epoll") and hasattr(select, "poll"):
            from . import linux
            # (A checker for Windows or macOS skips linux.py, never used there.)
            _current = linux.LinuxBackend()  # type: ignore[attr-defined,unused-ignore]
        else:
            from .portable import PortableBackend
            _current = PortableBackend()
    return _current


__all__ = ["EVENT_READ", "EVENT_WRITE", "Backend", "backend"]
