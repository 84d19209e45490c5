"""Names looked up without stopping the hub's loop.

getaddrinfo() blocks, sometimes for seconds: in a loop that serves a
thousand tunnels, one slow name would stall them all.  The proxy server
(which resolves what each client asks for) hands names to a Resolver: a
few threads for all lookups (THREADS: one slow name does not hold up the
others), whose answers come back through a socketpair the loop waits on.
A lookup its client gave up on is skipped if it has not begun.  Numeric
addresses never go to the threads.
"""

from __future__ import annotations

import socket
import threading
from collections import deque

from ..base.report import gai_strerror
from ..platform import EVENT_READ

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional, Union

    from ..relay.hub import Hub
    from .addr import AddrInfo

    Answer = Union[list[AddrInfo], str]  # the addresses, or why there are none
    Callback = Callable[[Answer], None]


THREADS = 4


class Lookup:
    """A lookup under way; ``cancel()`` and its callback is never called."""

    __slots__ = ("callback", "family", "host", "port")

    def __init__(self, host: str, port: int, family: int, callback: Callback) -> None:
        self.host, self.port, self.family = host, port, family
        self.callback: Optional[Callback] = callback

    def cancel(self) -> None:
        self.callback = None


def numeric(host: str, port: int, family: int) -> Optional[list[AddrInfo]]:
    """host's address if host is one (no lookup at all), else None."""
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0,
                                   socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)
    except (OSError, UnicodeError, ValueError):
        return None
    return infos  # type: ignore[return-value]


class Resolver:
    """One lookup thread for the hub; answers are delivered in the loop."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sock, self._far = socket.socketpair()
        self.sock.setblocking(False)
        self._jobs: deque[Lookup] = deque()
        self._answers: deque[tuple[Lookup, Answer]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        for i in range(THREADS):
            threading.Thread(target=self._run, daemon=True, name=f"pync-resolver-{i}").start()
        hub.watch(self.sock.fileno(), EVENT_READ, self)

    def lookup(self, host: str, port: int, family: int, callback: Callback) -> Lookup:
        job = Lookup(host, port, family, callback)
        with self._cond:
            self._jobs.append(job)
            self._cond.notify()
        return job

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._jobs.popleft()
            if job.callback is None:
                continue  # cancelled while it waited
            answer: Answer
            try:
                answer = socket.getaddrinfo(job.host, job.port, job.family,  # type: ignore[assignment]
                                            socket.SOCK_STREAM, 0, socket.AI_NUMERICSERV)
            except (OSError, UnicodeError, ValueError) as exc:
                answer = gai_strerror(exc)
            with self._cond:
                self._answers.append((job, answer))
            try:
                self._far.send(b"\0")
            except OSError:
                return  # the loop is gone

    def on_ready(self, fd: Optional[int], events: int) -> None:
        try:
            self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            with self._cond:
                if not self._answers:
                    return
                job, answer = self._answers.popleft()
            callback = job.callback
            if callback is not None:
                job.callback = None
                callback(answer)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.hub.forget(self.sock.fileno())
        self.sock.close()
        self._far.close()
