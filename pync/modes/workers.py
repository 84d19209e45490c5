"""``-l -k -e``: every connection served at once, each by a pync of its own.

Where the platform can fork, the listener forks one worker per connection:
the worker runs the session (and its -e child) and exits.  Elsewhere
(Windows, or fork hidden) the worker is spawned: a new interpreter is handed
the connection (inherited, or ``socket.share`` on Windows) and what it needs
to serve it (the command line, the peer's name, the listener's temporary TLS
certificate) on its stdin, and runs the same session code
(``cli.run.serve_handed_over``).

Either way workers are reaped as they end (before every accept, and on
SIGCHLD where there is one), so none is left a zombie for long; when the
listener stops, the workers still running are terminated and reaped.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from ..platform import backend
from ..platform.signals import SignalsDeferred

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional, Union

GRACE = 2.0  # seconds a worker may take to end once asked


class ForkedWorkers:
    """Workers made by fork(): the session is a closure run in the child."""

    def __init__(self, limit: Optional[int]) -> None:
        self.limit = limit
        self.pids: set[int] = set()
        self._plat = backend()
        self._undo = self._plat.on_child_exit(self.reap)

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.pids) >= self.limit

    def start(self, conn: socket.socket, where: str, session: Callable[[], int]) -> None:
        """Run session() in a new worker process; it exits with its status.

        Signals are held across the fork: the listener records the pid before
        a SIGTERM can make it stop (and stop() then reaches every worker),
        and a SIGTERM sent to a worker still starting is delivered once it
        can act on it.
        """
        deferred = SignalsDeferred().__enter__()
        try:
            pid = self._plat.fork()
        except BaseException:  # EAGAIN (no more processes): signals back on
            deferred.__exit__()
            raise
        if pid == 0:  # the worker: never returns into the listener's code
            status = 1
            try:
                self._undo()
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
            if self._plat.reap(pid, block=False) is not None:
                self.pids.discard(pid)

    def stop(self) -> None:
        """Terminate and reap the workers still running (the listener is ending)."""
        self._undo()
        for pid in list(self.pids):
            self._plat.terminate(pid)
        for pid in list(self.pids):
            self._plat.reap(pid, block=True)
        self.pids.clear()


# What a spawned worker runs: pync from where this pync was imported (a
# source tree, site-packages or a zipapp), whatever the worker's sys.path.
BOOT = ("import sys; sys.path.insert(0, {path!r}); "
        "from pync.cli.run import exit_with, serve_handed_over; exit_with(serve_handed_over)")


class SpawnedWorkers:
    """Workers started as new interpreters, each handed its connection."""

    def __init__(self, limit: Optional[int], argv: list[str],
                 tls_pem: Optional[bytes] = None) -> None:
        self.limit = limit
        self.argv = argv
        self.tls_pem = tls_pem
        self.procs: list[subprocess.Popen] = []
        self._plat = backend()
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._code = BOOT.format(path=root)

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.procs) >= self.limit

    def start(self, conn: socket.socket, where: str, session: Callable[[], int]) -> None:
        """Spawn a worker for conn (session, a closure, cannot cross processes)."""
        with SignalsDeferred():
            proc, handle = self._plat.spawn_worker([sys.executable, "-c", self._code], conn)
            self.procs.append(proc)
        job = {"argv": self.argv, "where": where, "socket": handle,
               "tls_pem": self.tls_pem.decode("ascii") if self.tls_pem else None}
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except OSError:
            pass  # it died at once: reaped with the others

    def reap(self) -> None:
        self.procs = [p for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def session_workers(limit: Optional[int], argv: list[str],
                    tls_pem: Optional[bytes]) -> Union[ForkedWorkers, SpawnedWorkers]:
    """Forked workers where the platform can fork, else spawned ones."""
    if backend().can_fork:
        return ForkedWorkers(limit)
    return SpawnedWorkers(limit, argv, tls_pem)
