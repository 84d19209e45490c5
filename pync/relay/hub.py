"""The hub: one event loop shared by many connections.

The relay (loop.py) joins pync's own stdio to one connection.  The
forwarder (-L) and the proxy server (-l -X) join connections to each
other, a thousand at once, in one process and one thread: each connection's
state machine (a listener, an outbound connect, a TLS or proxy handshake, a
Pair of joined sockets) is a Handler that tells the hub which descriptors
it waits on, and the hub calls it when they are ready.

* ``watch(fd, events, handler)`` sets what fd is waited for (0: nothing);
  ``forget(fd)`` before it is closed.  ``handler.on_ready(fd, events)`` is
  called when it is ready.
* ``call_at(when, callback, owner)`` runs a callback at a time (connect
  and idle timeouts), unless the Timer it returns is cancelled; its owner
  (the handler, where the callback is not one of its methods) answers for
  what it raises.
* ``soon(handler)``: call ``handler.on_ready(None, EVENT_READ)`` without
  waiting (a TLS stream holds bytes its socket no longer signals).

A handler whose ``on_ready`` (or timer) raises is given to its
``failed(exc)`` (it ends that one connection, which is then reported), so
no client can end the loop.  An event for a descriptor forgotten since the wait returned is
dropped: its number may already be another connection's.

The wait is the platform's for many descriptors (epoll on Linux, selectors
elsewhere).  Nothing here blocks but the wait itself.
"""

from __future__ import annotations

import heapq
import itertools
import time

from ..platform import EVENT_READ, backend

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional, Protocol

    class Handler(Protocol):
        def on_ready(self, fd: Optional[int], events: int) -> None: ...


class Timer:
    """A callback due at a time; ``cancel()`` before it is due and it never runs."""

    __slots__ = ("callback", "owner", "when")

    def __init__(self, when: float, callback: Optional[Callable[[], None]],
                 owner: object = None) -> None:
        self.when = when
        self.callback = callback
        self.owner = owner if owner is not None else getattr(callback, "__self__", None)

    def cancel(self) -> None:
        self.callback = None


class Hub:
    """Descriptors, their handlers, and timers, in one loop."""

    def __init__(self) -> None:
        self._plat = backend()
        self.waiter = self._plat.many_waiter()
        self._watched: dict[int, tuple[int, Handler]] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._soon: dict[int, Handler] = {}
        self._active = 0  # descriptors waited on
        self._stale: set[int] = set()  # forgotten since the wait returned
        self._closed = False
        self.stopped = False

    # -- what handlers call ---------------------------------------------------
    def watch(self, fd: int, events: int, handler: Handler) -> None:
        """Wait for events on fd (0: stop waiting on it, but keep it known)."""
        old = self._watched.get(fd)
        if old is not None and old[0] == events:
            if old[1] is not handler:
                self._watched[fd] = (events, handler)
            return
        if not events:
            if old is not None and old[0]:
                self.waiter.unregister(fd)
                self._active -= 1
            self._watched[fd] = (0, handler)
            return
        if old is None or not old[0]:
            self.waiter.register(fd, events)
            self._active += 1
        else:
            self.waiter.modify(fd, events)
        self._watched[fd] = (events, handler)

    def forget(self, fd: Optional[int]) -> None:
        """fd is about to be closed: no more events for it."""
        if fd is None:
            return
        self._stale.add(fd)
        old = self._watched.pop(fd, None)
        if old is not None and old[0]:
            self._active -= 1
            if not self._closed:
                self.waiter.unregister(fd)

    def call_at(self, when: float, callback: Callable[[], None],
                owner: object = None) -> Timer:
        timer = Timer(when, callback, owner)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def soon(self, handler: Handler) -> None:
        self._soon[id(handler)] = handler

    def stop(self) -> None:
        self.stopped = True

    # -- the loop ---------------------------------------------------------------
    def run(self) -> None:
        """Dispatch until stop() (or ^C): events, then what is due."""
        try:
            while not self.stopped:
                self._once()
        finally:
            self._closed = True  # what is forgotten now was never to be waited on again
            self.waiter.close()

    def _once(self) -> None:
        now = time.monotonic()
        timeout: Optional[float] = None
        if self._soon:
            timeout = 0.0
        elif self._timers:
            timeout = max(self._timers[0][0] - now, 0.0)
        if self._active:
            ready = self.waiter.poll(timeout)
        elif timeout is None:
            self.stopped = True  # nothing to wait for, ever
            return
        else:
            self._plat.sleep(timeout)
            ready = []
        self._stale.clear()
        for fd, events in ready:
            if fd in self._stale:
                continue  # closed (and its number maybe reused) since the wait
            entry = self._watched.get(fd)
            if entry is not None and entry[0] & events:
                self._dispatch(entry[1], fd, events & entry[0])
        if self._soon:
            due, self._soon = self._soon, {}
            for handler in due.values():
                self._dispatch(handler, None, EVENT_READ)
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            callback, timer.callback = timer.callback, None
            if callback is not None:
                try:
                    callback()
                except Exception as exc:
                    self._failed(timer.owner, exc)

    def _dispatch(self, handler: Handler, fd: Optional[int], events: int) -> None:
        try:
            handler.on_ready(fd, events)
        except Exception as exc:
            self._failed(handler, exc)

    @staticmethod
    def _failed(handler: object, exc: Exception) -> None:
        """One connection's trouble (a TLS alert, say) is its own: its
        handler's failed() ends it; without one, the error is the loop's."""
        failed = getattr(handler, "failed", None)
        if failed is None:
            raise exc
        failed(exc)
