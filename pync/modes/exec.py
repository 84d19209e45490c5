"""-e PROG / -c CMD: a child process as the local end of a session.

The child's stdin and stdout are pipes pync owns, relayed like stdin and
stdout are: bytes from the peer go to the child's stdin, and when the peer
half-closes, the child's stdin is closed, so ``sort`` or ``wc`` see EOF and
their answer still reaches the peer.  When the child's stdout ends, pync
shuts its write side of the socket and the session ends once that output
is delivered.  stderr stays pync's own.

The socket is never inherited (Python's sockets are close-on-exec and the
child is started with ``close_fds``), and the child is always reaped: it is
waited for when the session ends, terminated if it outlives it.

The child's environment tells it who it talks to: ``PYNC_REMOTE_ADDR``,
``PYNC_REMOTE_PORT``, ``PYNC_LOCAL_ADDR``, ``PYNC_LOCAL_PORT``,
``PYNC_PROTO``, and the ``NCAT_*`` names of the same for ncat's scripts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

from ..base.report import PyncError, strerror
from ..platform import backend
from ..platform.base import AF_UNIX
from ..relay.streams import FdStream

GRACE = 2.0  # seconds a child may take to exit once its session is over


def check_program(argv: tuple[str, ...]) -> None:
    """Fail before listening or connecting when -e names no program."""
    prog = argv[0]
    if os.sep in prog:
        if not os.access(prog, os.X_OK):
            err = "No such file or directory" if not os.path.exists(prog) else "Permission denied"
            raise PyncError(f"exec {prog}: {err}")
    elif shutil.which(prog) is None:
        raise PyncError(f"exec {prog}: command not found")


def child_environment(sock: socket.socket, proto: str) -> dict[str, str]:
    """os.environ plus the addresses of this connection, pync's and ncat's names."""
    env = dict(os.environ)
    extra = {"PROTO": "UNIX" if AF_UNIX is not None and sock.family == AF_UNIX
             else proto.upper()}
    for side, get in (("REMOTE", sock.getpeername), ("LOCAL", sock.getsockname)):
        try:
            addr = get()
        except OSError:
            continue  # an unbound UNIX peer, or an unconnected datagram socket
        if isinstance(addr, tuple):
            extra[f"{side}_ADDR"], extra[f"{side}_PORT"] = str(addr[0]), str(addr[1])
        elif addr:
            extra[f"{side}_ADDR"] = addr if isinstance(addr, str) else os.fsdecode(addr)
    for key, value in extra.items():
        env[f"PYNC_{key}"] = value
        env[f"NCAT_{key}"] = value
    return env


class ProcessStream(FdStream):
    """A running child: read its stdout, write its stdin.

    Where the platform cannot wait on the child's pipes (Windows), each goes
    through a bridge whose thread also closes the pipe when it is done: the
    child's stdin once every byte for it is written, its stdout at its end.
    """

    label = "exec"
    nonblocking = True
    grace = GRACE  # how long close() waits for the child before terminating it

    def __init__(self, argv: tuple[str, ...], env: dict[str, str]) -> None:
        plat = backend()
        try:
            self.proc = plat.start_child(argv, env)
        except OSError as exc:
            raise PyncError(f"exec {argv[0]}: {strerror(exc)}") from None
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        out_fd, in_fd = stdout.fileno(), stdin.fileno()  # a bridge may close them soon
        self._attach(out_fd, in_fd, read_done=stdout.close, write_done=stdin.close,
                     blocking_writes=False)
        for fd, bridged in ((out_fd, self._reader), (in_fd, self._writer)):
            if bridged is None:
                plat.prepare_pipe(fd)  # pync's own pipes: never block the relay

    def shutdown_write(self) -> None:
        """The peer is done: the child sees EOF on its stdin."""
        if self._writer is not None:
            self._writer.finish()  # its thread closes stdin after the last byte
        elif self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass  # the child left without reading: nothing to flush
        self.write_fd = None

    def interrupt(self) -> None:
        self.grace = 0.0  # the child is terminated at once when closed

    def close(self) -> None:
        """Close the pipes and reap the child, terminating it if it lingers.

        Its stdout is closed first, as a bridge's too (whose thread then
        closes the pipe): a child still writing gets EPIPE and ends at once.
        Once it is reaped, what a bridge still holds for its stdin has
        nowhere to go (a grandchild may keep the pipe open): not waited for.
        """
        self.shutdown_write()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        elif self.proc.stdout is not None:
            self.proc.stdout.close()
        self.read_fd = None
        reap(self.proc, self.grace)
        self._close_bridges(flush=False)


def reap(proc: subprocess.Popen, grace: float = GRACE) -> None:
    """Wait for proc up to grace seconds, then terminate it, then kill it."""
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    for stop in (proc.terminate, proc.kill):
        try:
            stop()
            proc.wait(timeout=GRACE)
            return
        except subprocess.TimeoutExpired:
            continue
        except OSError:
            break
    proc.wait()
