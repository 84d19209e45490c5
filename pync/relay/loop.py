"""The relay: one poll loop joining the local end and the network end.

This is OpenBSD netcat's readwrite() in Python.  Two directions, each a
bounded buffer between a source and a destination:

    up:    local input (stdin)  -> buffer -> network
    down:  network              -> buffer -> local output (stdout)

A source is read only while its buffer has room and a destination written
only while its buffer has data, so memory stays bounded whatever the peers
do.  Timers (-w idle, -q quit, -i line interval) are deadlines folded into
the poll timeout: no sleep(), no threads.

End-of-stream rules, as nc 1.219 behaves (see DESIGN.md):

* stdin done (EOF and its buffer flushed): stop sending; with -N or -q N>=0
  shut the socket's write side.  In listen mode -q N then ends the session
  N seconds later.
* network input done: its buffer drains to stdout, then stdout is done.
* the session ends when both inputs are done, or both outputs are gone, or
  (listen mode) the network input is done; with -q N > 0, N seconds later.
* -w N: N seconds with nothing to do ends the session (status 0).

The loop waits through the platform's Waiter (platform/): bare poll() on
Linux, the ``selectors`` default elsewhere.  It never asks which platform
it is on.

Where the waiter says spinning pays (Linux's poll), in a dialogue (small
reads alternating between the two directions) the loop polls without
blocking for a few microseconds before it sleeps, as the kernel's haltpoll
does for an idle CPU: waking a sleeping process costs more than the reply
takes to come (on the 2-vCPU VM measured, a 1-byte round trip fell from ~250
to ~100 us).  The window adapts: it grows while replies
come within it and shrinks to nothing when they do not; bulk transfers,
one-way or in large reads, never spin.

A one-way bulk flow from a TCP socket (BATCH_AFTER bytes read with nothing
the other way, the last read BURST_MIN or more) raises the socket's
SO_RCVLOWAT to BATCH: poll() then wakes once per BATCH bytes instead of once
per segment the peer sent (nc's 16 KiB writes woke the receiver ~25,000
times per GiB, costing more CPU than the bytes).  What comes after the flow
pauses is never held back: BATCH_WAIT after the last read the mark drops
back to 1 byte, as it does at once when anything moves the other way, and an
end of stream wakes poll() at once.  Requests and replies smaller than
BATCH_AFTER never meet the mark, so they never wait for it.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from ..base.record import Record
from ..base.report import Reporter
from ..platform import EVENT_READ, EVENT_WRITE, backend
from ..protocols.crlf import CrlfTranslator
from .buffers import (
    BUFSIZE,
    DATAGRAM_MAX,
    UDP_PAYLOAD_MAX,
    FileSendBuffer,
    MemoryBuffer,
    PipeBuffer,
    new_buffer,
)
from .streams import Stream

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

    from ..protocols.telnet import TelnetFilter
    from .progress import Meter

MAX_WAIT = 86400.0  # longest single poll(); longer deadlines take several
# The dialogue spin window, in seconds (see the module's docstring): it starts
# at SPIN_START, doubles while a reply comes within SPIN_MAX of sleeping,
# halves (to 0 below SPIN_START) when it does not.
SPIN_START = 20e-6
SPIN_MAX = 200e-6
BATCH_AFTER = 4 * 1024 * 1024  # read one way with nothing the other: bulk
BATCH = 512 * 1024   # bulk from TCP: poll() wakes once this much waits...
BATCH_WAIT = 0.001   # ... or this long after the last read
# Reads in a row from a source that keeps filling whole chunks, before
# polling again: fewer system calls per byte in bulk transfers, while the
# other direction and the timers wait at most BURST chunks.
BURST = 16
BURST_MIN = 32 * 1024  # a read this large says a bulk flow: more is likely waiting

# Errors that mean "the peer is gone", ending one direction.
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN)


class RelayConfig(Record):
    """The Options that shape a session, in the relay's own terms."""

    end_at_net_eof: bool = False           # listen mode: the peer's EOF ends it
    quit_from_stdin_eof: bool = False      # -q counts from stdin EOF (listen, UDP)
    half_close: bool = False               # -N, or -q N >= 0
    quit_after: Optional[int] = None       # -q N (N >= 0), else None
    idle_timeout: Optional[float] = None   # -w N
    interval: float = 0.0                  # -i N: pause after each line sent
    crlf: bool = False                     # -C
    recv_limit: Optional[int] = None       # -W N network reads
    no_stdin: bool = False                 # -d, --recv-only
    send_only: bool = False                # --send-only: network input ignored
    end_at_local_eof: bool = False         # exec: the child's output ending ends it


class ByteWork:
    """What a session asks of the relay besides moving bytes.

    Either one makes both directions copy through memory (no splice), since
    the bytes must be seen.
    """

    def __init__(self, record: Optional[Callable[[bool, bytes], None]] = None,
                 telnet: Optional[TelnetFilter] = None) -> None:
        self.record = record  # -o/--hex-dump: (sent?, bytes)
        self.telnet = telnet  # -t: network bytes -> (for stdout, replies)


class Direction:
    """One way through the relay: source -> bounded buffer -> destination.

    ``process``, when set, sees every chunk read and returns what to queue
    (-C, -t, dumps).  ``urgent`` holds bytes that go out before the buffer's
    (telnet replies): short, and never split from a write already begun.
    """

    def __init__(self, src: Stream, dst: Stream, transform: bool,
                 src_open: bool = True) -> None:
        self.src = src
        self.dst = dst
        self.src_open = src_open and src.read_fd is not None
        self.dst_open = dst.write_fd is not None
        # Datagrams into a byte stream (-u to stdout), where boundaries do
        # not matter: every datagram waiting is read (each whole, into room
        # for the largest) and all of them written at once.
        self.gather = src.datagram and not dst.datagram and not transform
        if not (self.src_open and self.dst_open):
            self.buf = MemoryBuffer(1)
        elif dst.datagram:
            # Each read from stdin becomes one datagram: no larger than UDP
            # allows, sent whole before the next read.
            self.buf = MemoryBuffer(UDP_PAYLOAD_MAX, whole_messages=True)
        elif self.gather:
            self.buf = MemoryBuffer(2 * DATAGRAM_MAX)
        elif src.datagram:
            # One datagram at a time (transformed), read whole into an empty buffer.
            self.buf = MemoryBuffer(DATAGRAM_MAX, whole_messages=True)
        else:
            self.buf = new_buffer(src, dst, transform)
        # Descriptors used without waiting (the platform cannot wait on them,
        # and they are always ready: see Stream.always_ready).
        self.read_always = src.read_fd is not None and src.read_fd in src.always_ready
        self.write_always = dst.write_fd is not None and dst.write_fd in dst.always_ready
        self.paused_until = 0.0  # -i: no writing before this time
        # Sources that never block (non-blocking sockets and pipes, files,
        # splice with SPLICE_F_NONBLOCK) may be read again without a poll.
        self.burst = BURST if _never_blocks(src, self.buf) else 1
        self.batched = False  # the source's SO_RCVLOWAT is raised to BATCH
        self.read_at = 0.0    # when it was last read (while batched)
        self.streak = 0       # bytes read since the other direction last read
        self.process: Optional[Callable[[bytes], bytes]] = None
        self.scratch: Optional[memoryview] = None  # where process's input is read
        self.urgent = bytearray()

    @property
    def empty(self) -> bool:
        return self.buf.empty and not self.urgent

    def clear(self) -> None:
        """Drop what is pending: its destination is gone."""
        self.buf.clear()
        self.urgent.clear()


class Relay:
    """Runs one session between a local Stream and a network Stream."""

    def __init__(self, local: Stream, net: Stream, config: RelayConfig,
                 reporter: Reporter, first_data: bytes = b"",
                 work: Optional[ByteWork] = None, meter: Optional[Meter] = None) -> None:
        self.local = local
        self.net = net
        self.cfg = config
        local.start()
        self.report = reporter
        work = work or ByteWork()
        seen = work.record is not None
        self.up = Direction(local, net, config.crlf or config.interval > 0 or seen,
                            src_open=not config.no_stdin)
        try:
            # -W counts reads: reads the same size on either path (a splice
            # could take a whole 1 MiB pipe's worth where a read takes 128 KiB).
            self.down = Direction(net, local, seen or work.telnet is not None
                                  or config.recv_limit is not None)
        except BaseException:
            self.up.buf.close()
            raise
        if config.send_only:
            self.down.dst_open = False  # nothing from the network is wanted
        self.crlf = CrlfTranslator() if config.crlf else None
        self._set_processing(work)
        self.net_reads = 0
        self.sent = 0      # bytes written to the network
        self.received = 0  # bytes read from the network
        self.meter = meter
        self.last_io = 0.0  # when poll last reported something (-w)
        if first_data:  # already read: a datagram listener's first, a proxy's extra
            self.down.buf.append(first_data)
            self.received += len(first_data)
            self._count_net_read()
        self.status = 0
        self.stdin_done = False  # stdin's end has been acted on (-N, -q)
        self.answers_telnet = work.telnet is not None
        self.quit_at: Optional[float] = None    # -q deadline
        self.waiter = backend().waiter()
        self.interest: dict[int, int] = {}
        self.always: dict[int, int] = {}  # ready without waiting (Stream.always_ready)
        self.spin = 0.0            # the current spin window (s)
        # A dialogue: the last read was small and went the other way from
        # the one before it (last_read: the direction read last).
        self.dialogue = False
        self.last_read: Optional[Direction] = None
        # Directions whose source may hold bytes poll() cannot see (TLS).
        self.may_pend = [d for d in (self.up, self.down) if d.src.holds_bytes]

    def _set_processing(self, work: ByteWork) -> None:
        """Give each direction that must see its bytes a ``process`` step."""
        record, telnet, crlf = work.record, work.telnet, self.crlf
        if crlf is not None or record is not None:
            def sending(data: bytes) -> bytes:
                if crlf is not None:
                    data = crlf.feed(data)
                if record is not None:
                    record(True, data)
                return data
            self.up.process = sending
        if telnet is not None or record is not None:
            up = self.up

            def receiving(data: bytes) -> bytes:
                if record is not None:
                    record(False, data)
                if telnet is not None:
                    data, replies = telnet.feed(data)
                    if replies and up.dst_open:
                        up.urgent += replies
                return data
            self.down.process = receiving

    # -- the loop ---------------------------------------------------------
    def run(self) -> int:
        """Relay until the session ends; returns the exit status (0 or 1)."""
        start = time.monotonic()
        try:
            self._loop()
        finally:
            self.waiter.close()
            self.up.buf.close()
            self.down.buf.close()
            if self.meter is not None:
                self.meter.finish(self.sent, self.received)
            self.report.summary(self.sent, self.received, time.monotonic() - start)
        return self.status

    def _loop(self) -> None:
        up, down = self.up, self.down
        idle = self.cfg.idle_timeout
        self.last_io = time.monotonic()
        while True:
            self._after_io()
            now = time.monotonic()
            if self.meter is not None and now >= self.meter.due:
                self.meter.tick(self.sent, self.received, now)
            for d in (up, down):
                if d.batched and now - d.read_at >= BATCH_WAIT:
                    _unbatch(d)  # the flow paused: every byte wakes poll() again
            if self._session_over(now):
                if not self._linger(now):
                    return
                continue
            if idle is not None and now - self.last_io >= idle:
                return  # -w: nothing happened for that long
            timeout = self._timeout(now)
            self._set_interest()
            # A TLS end may hold decrypted bytes poll() cannot see.
            pending = [d for d in self.may_pend if d.src_open and d.src.pending()
                       and self._read_room(d) and d.src.read_fd is not None]
            if pending or self.always:
                timeout = 0.0
            if self.interest:
                ready = self._poll(timeout)
            elif timeout is None:
                return  # nothing to watch and no deadline: nothing can happen
            else:
                backend().sleep(timeout)
                ready = []
            if not ready and not pending and not self.always:
                continue
            self.last_io = time.monotonic()
            events: dict[int, int] = dict(self.always)
            for fd, ev in ready:
                events[fd] = events.get(fd, 0) | ev
            for d in pending:
                src_fd = d.src.read_fd
                assert src_fd is not None
                events[src_fd] = events.get(src_fd, 0) | EVENT_READ
            self._read(up, events)
            self._write(up, events)
            self._read(down, events)
            self._write(down, events)

    def _poll(self, timeout: Optional[float]) -> list[tuple[int, int]]:
        """Wait for the interest set; in a dialogue, spin briefly first."""
        poll = self.waiter.poll
        if not self.dialogue or timeout == 0 or not self.waiter.spins:
            return poll(timeout)
        started = time.perf_counter()
        if self.spin:
            end = started + self.spin
            while True:
                ready = poll(0)
                if ready:
                    return ready
                if time.perf_counter() >= end:
                    break
        ready = poll(timeout)
        if ready and time.perf_counter() - started <= SPIN_MAX:
            self.spin = min(max(self.spin * 2, SPIN_START), SPIN_MAX)  # would have caught it
        else:
            self.spin = self.spin / 2 if self.spin > SPIN_START else 0.0
        return ready

    # -- end of stream ----------------------------------------------------
    def _after_io(self) -> None:
        """nc's bookkeeping at the bottom of readwrite()."""
        up, down = self.up, self.down
        if not up.src_open and up.empty and up.dst_open and not self.stdin_done:
            self.stdin_done = True
            # Without -N the socket stays writable, and -t may still owe the
            # peer replies: nc's atelnet() writes them whenever they come.
            if self.cfg.half_close or not self.answers_telnet:
                up.dst_open = False
            if self.cfg.half_close:
                self.net.shutdown_write()
            q = self.cfg.quit_after
            if self.cfg.quit_from_stdin_eof and q is not None:
                self._arm_quit(time.monotonic() + q)
        if not up.dst_open and up.src_open:
            up.src_open = False  # nowhere to send stdin: stop reading it
        if not down.src_open and down.empty and down.dst_open:
            down.dst_open = False
            self.local.shutdown_write()  # an exec child sees EOF on its stdin
        if not down.dst_open and down.src_open:
            down.src_open = False  # stdout gone: stop reading the network
            self.net.shutdown_read()

    def _session_over(self, now: float) -> bool:
        up, down = self.up, self.down
        if self.quit_at is not None and now >= self.quit_at:
            return True
        drained = up.empty and down.empty
        if not up.src_open and not down.src_open and drained:
            return True
        if not up.dst_open and not down.dst_open:
            return True
        if self.cfg.end_at_local_eof and not up.src_open and up.empty:
            return True
        return bool(self.cfg.end_at_net_eof and not down.src_open and drained
                    and (not up.src_open or now >= self.local.settled_at()))

    def _linger(self, now: float) -> bool:
        """With -q N > 0, nc waits N seconds after the session is over.

        Returns True while still waiting (the loop goes on, doing nothing but
        waiting for the deadline), False when the relay should return.
        """
        q = self.cfg.quit_after
        if q is None or q <= 0:
            return False
        if self.quit_at is None:
            self._arm_quit(now + q)
        if now >= self.quit_at:  # type: ignore[operator]
            return False
        for d in (self.up, self.down):
            d.src_open = d.dst_open = False
            d.clear()
        backend().sleep(self.quit_at - now)  # type: ignore[operator]
        return True

    def _arm_quit(self, when: float) -> None:
        if self.quit_at is None or when < self.quit_at:
            self.quit_at = when

    def _timeout(self, now: float) -> Optional[float]:
        """Seconds until the next timer (-q, -i, -w, --progress); None: no timer."""
        deadlines = []
        if self.quit_at is not None:
            deadlines.append(self.quit_at)
        if self.up.paused_until > now and not self.up.empty:
            deadlines.append(self.up.paused_until)
        if self.cfg.idle_timeout is not None:
            deadlines.append(self.last_io + self.cfg.idle_timeout)
        if self.meter is not None:
            deadlines.append(self.meter.due)
        if self.cfg.end_at_net_eof and self.up.src_open and self.local.settled_at() > now:
            deadlines.append(self.local.settled_at())
        for d in (self.up, self.down):
            if d.batched:
                deadlines.append(d.read_at + BATCH_WAIT)
        if not deadlines:
            return None
        return min(max(min(deadlines) - now, 0.0), MAX_WAIT)  # poll() takes no more

    # -- interest ---------------------------------------------------------
    def _set_interest(self) -> None:
        want: dict[int, int] = {}
        always = self.always
        always.clear()
        now = time.monotonic()
        for d in (self.up, self.down):
            if d.src_open and self._read_room(d) and d.src.read_fd is not None:
                into = always if d.read_always else want
                into[d.src.read_fd] = into.get(d.src.read_fd, 0) | EVENT_READ
            if (d.dst_open and not d.empty and d.dst.write_fd is not None
                    and d.paused_until <= now and d.dst.can_write()):
                into = always if d.write_always else want
                into[d.dst.write_fd] = into.get(d.dst.write_fd, 0) | EVENT_WRITE
        if want == self.interest:
            return
        for fd in self.interest:
            if fd not in want:
                self.waiter.unregister(fd)
        for fd, ev in want.items():
            old = self.interest.get(fd)
            if old is None:
                self.waiter.register(fd, ev)
            elif old != ev:
                self.waiter.modify(fd, ev)
        self.interest = want

    # -- I/O --------------------------------------------------------------
    def _read_room(self, d: Direction) -> int:
        """How much one read may take: -C's LF -> CRLF at most doubles it."""
        room = d.buf.room
        if d.gather and room < DATAGRAM_MAX:
            return 0  # no room for the largest datagram: no read, nor read interest
        return room // 2 if self.crlf is not None and d is self.up else room

    def _read(self, d: Direction, events: dict[int, int]) -> None:
        fd = d.src.read_fd
        if not d.src_open or fd is None or not events.get(fd, 0) & EVENT_READ:
            return
        if not d.dst_open:
            return  # its destination is gone: _after_io closes this source
        for _ in range(d.burst):
            if not self._read_once(d):
                return

    def _read_once(self, d: Direction) -> bool:
        """Read once and pass it on; True if reading again at once is worth it
        (a large read, all of it passed on, the source still open).  A small
        read means the source is drained: another read would only cost a
        system call (and latency, in a ping-pong)."""
        room = self._read_room(d)
        if not room:
            return False
        try:
            if d.gather:
                n = self._gather(d)
            elif d.process is not None:
                if d.scratch is None:
                    d.scratch = memoryview(bytearray(BUFSIZE))
                n = d.src.read_into(d.scratch[:min(room, BUFSIZE)])
                if n:
                    d.buf.append(d.process(bytes(d.scratch[:n])))
            else:
                n = d.buf.fill(d.src)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._source_failed(d, exc)
            return False
        if n == 0:
            d.src_open = False
            if d is self.down:
                self.net.shutdown_read()
            return False
        if d is self.down and not d.gather:  # _gather counts each datagram
            self.received += n
            self._count_net_read()
        self.dialogue = n < BURST_MIN and d is not self.last_read
        if d is not self.last_read:
            self.last_read = d
            other = self.up if d is self.down else self.down
            other.streak = 0
            if other.batched:
                _unbatch(other)  # a reply may be on its way: no mark to wait for
        d.streak += n
        if d.batched:
            d.read_at = time.monotonic()
        elif (d.streak >= BATCH_AFTER and n >= BURST_MIN and self.cfg.recv_limit is None
              and d.src.wake_at(BATCH)):
            d.batched = True  # a one-way bulk flow: wake once per BATCH bytes
            d.read_at = time.monotonic()
        # Data in hand: try to pass it on now rather than after another poll.
        if d.dst_open and d.dst.write_fd is not None:
            self._write(d, {d.dst.write_fd: EVENT_WRITE})
        return n >= BURST_MIN and d.src_open and d.dst_open and d.empty

    def _gather(self, d: Direction) -> int:
        """Read the datagrams waiting, each whole, while there is room for
        the largest; how many bytes came (BlockingIOError: none).  One poll
        and one write for many datagrams: 64-byte datagrams otherwise cost a
        poll, a recv and a write each, and the kernel drops what does not
        fit its buffer meanwhile."""
        total = 0
        while d.buf.room >= DATAGRAM_MAX:
            try:
                n = d.buf.fill(d.src, DATAGRAM_MAX)
            except (BlockingIOError, InterruptedError):  # none left
                if total:
                    break
                raise
            # Another OSError (an ICMP refusal, read once) propagates: the
            # datagrams already in the buffer stay there and are written.
            if not n:
                break
            total += n
            if d is self.down:
                self.received += n
        return total

    def _count_net_read(self) -> None:
        """-W N: after N reads from the network, stop reading both inputs."""
        self.net_reads += 1
        limit = self.cfg.recv_limit
        if limit is not None and self.net_reads >= limit:
            self.down.src_open = False
            self.net.shutdown_read()
            self.up.src_open = False

    def _write(self, d: Direction, events: dict[int, int]) -> None:
        fd = d.dst.write_fd
        if d.empty or not d.dst_open or fd is None or not events.get(fd, 0) & EVENT_WRITE:
            return
        if d.paused_until > time.monotonic():
            return
        by_line = bool(self.cfg.interval) and d is self.up
        try:
            while d.urgent:
                n = d.dst.write(memoryview(d.urgent))
                del d.urgent[:n]
                self.sent += n
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._destination_failed(d, exc)
            return
        while not d.buf.empty:
            line = d.buf.first_line_end() if by_line else 0
            try:
                n = d.buf.drain(d.dst, line or None)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._destination_failed(d, exc)
                return
            if d is self.up:
                self.sent += n
            if line and n == line:
                d.paused_until = time.monotonic() + self.cfg.interval
                return
            if n == 0:
                return

    def _source_failed(self, d: Direction, exc: OSError) -> None:
        d.src_open = False
        if d is self.down:
            # nc keeps status 0 after a reset; for UDP under -v its probe
            # sees the ICMP error and it exits 1: so does pync.
            if self.net.datagram and self.report.verbose:
                self.status = 1
            self.report.net_error(f"read from {self.net.label} failed", exc,
                                  level=1 if self.net.datagram else 2)
            self.net.shutdown_read()
            # A reset or refused connection takes nothing more either.
            self.up.dst_open = False
            self.up.clear()

    def _destination_failed(self, d: Direction, exc: OSError) -> None:
        d.dst_open = False
        d.clear()
        if d is self.up:
            self.report.net_error(f"write to {self.net.label} failed", exc)
        # stdout gone (EPIPE and the like): end quietly, as nc does.


def _never_blocks(src: Stream, buf: object) -> bool:
    """May src be read again without a poll first?  Non-blocking streams,
    regular files, and a pipe read with splice(SPLICE_F_NONBLOCK); not a
    blocking socket or terminal given as stdin (inetd, socket activation)."""
    if src.nonblocking or isinstance(buf, FileSendBuffer):
        return True
    try:
        mode = os.fstat(src.read_fd).st_mode if src.read_fd is not None else 0
    except OSError:
        return False
    return stat.S_ISREG(mode) or (stat.S_ISFIFO(mode) and isinstance(buf, PipeBuffer))


def _unbatch(d: Direction) -> None:
    """Every byte wakes poll() again for this direction's source."""
    d.batched = False
    d.src.wake_at(1)
