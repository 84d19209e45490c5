"""UNIX-domain socket files: binding them safely and removing only our own.

nc unlinks whatever is at the path before binding (even a regular file) and
leaves its socket file behind.  pync binds only over a *stale* socket (one
nobody listens on), never follows or removes anything else, and removes the
file it created when it is done — if it is still the same file.
"""

from __future__ import annotations

import os
import socket
import stat

from ..base.report import PyncError, strerror
from ..platform.base import AF_UNIX
from .addr import unix_address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


class SocketFile:
    """The socket file this process created; removed only if still ours."""

    def __init__(self, path: str, remove_dir: bool = False) -> None:
        self.path = path
        self.remove_dir = remove_dir
        st = os.lstat(path)
        self.identity: tuple[int, int] = (st.st_dev, st.st_ino)

    def remove(self) -> None:
        try:
            st = os.lstat(self.path)
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self.identity:
                os.unlink(self.path)
            if self.remove_dir:
                os.rmdir(os.path.dirname(self.path))
        except OSError:
            pass


def remove_stale_socket(path: str, socktype: int) -> None:
    """Unlink a socket file at path that no process is bound to."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        return  # not ours to remove: bind() will say "Address already in use"
    assert AF_UNIX is not None  # -U was refused where there is none
    probe = socket.socket(AF_UNIX, socktype)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        try:
            os.unlink(path)
        except OSError:
            pass
    except OSError:
        pass
    finally:
        probe.close()


def bind_unix(sock: socket.socket, path: str) -> Optional[SocketFile]:
    """Bind sock to path (``@name``: abstract); the file to remove later, if any."""
    if not path.startswith("@"):
        remove_stale_socket(path, sock.type)
    try:
        sock.bind(unix_address(path))
    except (OSError, ValueError) as exc:
        raise PyncError(strerror(exc)) from None
    return None if path.startswith("@") else SocketFile(path)
