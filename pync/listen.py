"""Server mode: bind, accept one connection (or one after another with -k),
relay stdio over it.

``-l [addr] port`` or ``-l -s addr -p port``; port 0 lets the kernel choose
(shown under -v).  ``-U path`` listens on a UNIX-domain socket and removes
the socket file it created when it exits; ``@name`` is Linux's abstract
namespace.  SO_REUSEADDR is set so a restarted listener can rebind at once;
SO_REUSEPORT is not (nc sets it), so a port already in use is an error
instead of two listeners silently sharing it.
"""

from __future__ import annotations

import os
import socket
import stat
from typing import Optional

from . import sockopts
from .addr import display_host, resolve_local, unix_address
from .options import IPPROTO_DCCP, Options
from .report import PyncError, Reporter, strerror
from .session import relay_session
from .streams import Stream

BACKLOG = 5


def run_listen(opts: Options, local: Stream, report: Reporter) -> int:
    """Listen mode; returns the exit status of the last session."""
    server, cleanup = _unix_listener(opts, report) if opts.unix else (
        _inet_listener(opts, report), None)
    status = 0
    try:
        while True:
            conn, peer = server.accept()
            if opts.unix:
                where = opts.unix_path or ""
            else:
                where = f"{display_host(peer, opts.numeric)} {peer[1]}"
            report.received(where)
            status = relay_session(conn, where, local, opts, report)
            if not opts.keep_open:
                return status
    finally:
        server.close()
        if cleanup is not None:
            cleanup.remove()


def _inet_listener(opts: Options, report: Reporter) -> socket.socket:
    """Bind the first address that works for [host] port, and listen."""
    port = str(opts.ports[0])
    md5_key = sockopts.read_md5_password() if opts.md5sig else None
    last_error: Optional[OSError] = None
    for family, socktype, proto, _, sockaddr in resolve_local(
            opts.host, port, opts.family, opts.socktype, opts.numeric):
        sock = socket.socket(family, socktype, IPPROTO_DCCP if opts.dccp else proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sockopts.apply(sock, family, opts, md5_key)
            sock.bind(sockaddr)
            sock.listen(BACKLOG)
        except PyncError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        local = sock.getsockname()
        report.listening(f"{display_host(local, opts.numeric)} {local[1]}")
        return sock
    raise PyncError(strerror(last_error) if last_error else "no address to listen on")


class _SocketFile:
    """The UNIX socket file this process created, removed only if still ours."""

    def __init__(self, path: str) -> None:
        self.path = path
        st = os.lstat(path)
        self.identity: tuple[int, int] = (st.st_dev, st.st_ino)

    def remove(self) -> None:
        try:
            st = os.lstat(self.path)
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self.identity:
                os.unlink(self.path)
        except OSError:
            pass


def _unix_listener(opts: Options, report: Reporter
                   ) -> tuple[socket.socket, Optional[_SocketFile]]:
    """-lU path: bind a UNIX stream socket.

    nc unlinks whatever is at the path first, even a regular file.  pync
    replaces only a stale socket (one nobody listens on); a live socket is
    "Address already in use" and any other file is left alone.
    """
    path = opts.unix_path
    assert path is not None
    address = unix_address(path)
    if not path.startswith("@"):
        _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(address)
        created = None if path.startswith("@") else _SocketFile(path)
    except (OSError, ValueError) as exc:
        sock.close()
        raise PyncError(strerror(exc)) from None
    try:
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if created:
            created.remove()
        raise PyncError(strerror(exc)) from None
    report.bound(path)
    report.listening(path)
    return sock, created


def _remove_stale_socket(path: str) -> None:
    """Unlink a socket file at path that no process is listening on."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        return  # not ours to remove: bind() will say "Address already in use"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
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
