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
import signal
import socket
import subprocess

from ..base.report import PyncError, strerror
from ..relay.streams import FdStream, grow_pipe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

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
    extra = {"PROTO": "UNIX" if sock.family == socket.AF_UNIX else proto.upper()}
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
    """A running child: read its stdout, write its stdin."""

    label = "exec"
    nonblocking = True
    grace = GRACE  # how long close() waits for the child before terminating it

    def __init__(self, argv: tuple[str, ...], env: dict[str, str]) -> None:
        try:
            self.proc = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                close_fds=True, env=env)
        except OSError as exc:
            raise PyncError(f"exec {argv[0]}: {strerror(exc)}") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.read_fd = self.proc.stdout.fileno()
        self.write_fd = self.proc.stdin.fileno()
        for fd in (self.read_fd, self.write_fd):
            os.set_blocking(fd, False)  # pync's own pipes: never block the relay
            grow_pipe(fd)

    def shutdown_write(self) -> None:
        """The peer is done: the child sees EOF on its stdin."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass  # the child left without reading: nothing to flush
        self.write_fd = None

    def interrupt(self) -> None:
        self.grace = 0.0  # the child is terminated at once when closed

    def close(self) -> None:
        """Close the pipes and reap the child, terminating it if it lingers."""
        self.shutdown_write()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.read_fd = None
        reap(self.proc, self.grace)


def reap(proc: subprocess.Popen, grace: float = GRACE) -> None:
    """Wait for proc up to grace seconds, then SIGTERM, then SIGKILL."""
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            proc.send_signal(sig)
            proc.wait(timeout=GRACE)
            return
        except subprocess.TimeoutExpired:
            continue
        except OSError:
            break
    proc.wait()


class SessionWorkers:
    """``-l -k -e``: every connection served at once, by a forked pync.

    The listener forks one worker per connection; the worker runs the
    session (and its -e child) and exits.  Workers are reaped as they end
    (SIGCHLD, and before every accept), so none is left a zombie; when the
    listener stops, the workers still running are terminated and reaped.
    """

    def __init__(self, limit: Optional[int]) -> None:
        self.limit = limit
        self.pids: set[int] = set()
        try:
            self._old = signal.signal(signal.SIGCHLD, lambda *_: self.reap())
        except ValueError:  # not the main thread (library use): reap as we go
            self._old = None

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.pids) >= self.limit

    def start(self, session: Callable[[], int]) -> None:
        """Run session() in a new worker process; it exits with its status.

        Signals are held across the fork: the listener records the pid before
        a SIGTERM can make it stop (and stop() then reaches every worker),
        and a SIGTERM sent to a worker still starting is delivered once it
        can act on it.
        """
        from ..platform.signals import SignalsDeferred

        deferred = SignalsDeferred().__enter__()
        try:
            pid = os.fork()
        except BaseException:  # EAGAIN (no more processes): signals back on
            deferred.__exit__()
            raise
        if pid == 0:  # the worker: never returns into the listener's code
            status = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                deferred.__exit__()
                status = session()
            except KeyboardInterrupt:
                status = 130
            except BaseException as exc:  # Terminated by SIGTERM/SIGHUP, or a bug
                signum = getattr(exc, "signum", None)
                status = 128 + signum if signum else 1
            finally:
                os._exit(status)
        self.pids.add(pid)
        deferred.__exit__()

    def reap(self) -> None:
        """Collect every worker that has ended."""
        for pid in list(self.pids):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.pids.discard(pid)

    def stop(self) -> None:
        """Terminate and reap the workers still running (the listener is ending)."""
        if self._old is not None:
            signal.signal(signal.SIGCHLD, self._old)
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in list(self.pids):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.pids.clear()
