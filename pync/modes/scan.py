"""-z: port scanning, many probes in flight from one poll loop.

nc probes one port after another, each waiting for its connect to finish or
time out, so 20 filtered ports with -w 1 take 20 s.  pync starts up to
WINDOW probes at once (kept well under the open-file limit), each bounded by
-w (default DEFAULT_WAIT s, so a scan never hangs), and prints the results
in the order the ports were given (or shuffled, -r) as soon as each is known.
``-i secs`` makes it sequential with that delay between probes, as nc does.

Messages are nc's: under -v ``Connection to H P port [tcp/svc] succeeded!``
and ``pync: connect to H port P (tcp) failed: Connection refused``; without
-v only the exit status tells: 0 if any port is open.

UDP (-uz) is honest where nc "succeeds" always: an empty datagram (or
--udp-probe DATA) goes to each port; a reply means open, ICMP port
unreachable means closed, silence until -w means open|filtered.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import tempfile
import time
from collections import deque

from ..base.options import Options
from ..base.report import PyncError, Reporter, errno_text, strerror
from ..net import sockopts
from ..net.addr import (
    AddrInfo,
    numeric_host,
    resolve,
    service_name,
    unix_address,
)
from ..platform import backend
from ..platform.base import AF_UNIX, CONNECT_IN_PROGRESS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Optional

WINDOW = 512
DEFAULT_WAIT = 5.0
UDP_DEFAULT_WAIT = 2.0
PARALLEL_MIN = 4096   # ports; below this one process is quicker than forking
MAX_WORKERS = 4
TIMED_OUT = "timed out"
OPEN_FILTERED = "open|filtered"
# A UDP probe's ICMP port unreachable: ECONNREFUSED, or on Windows
# WSAECONNRESET (as errno 10054).
UDP_REFUSED = frozenset({errno.ECONNREFUSED, 10054})


class Probe:
    """One port's probe: which address it is on, and what was found."""

    __slots__ = ("addr_i", "deadline", "done", "ip", "open", "outcomes", "port", "sock")

    def __init__(self, port: int) -> None:
        self.port = port
        self.addr_i = 0
        self.sock: Optional[socket.socket] = None
        self.ip = ""
        self.deadline = 0.0
        # (ip, None): succeeded; (ip, reason): failed, TIMED_OUT or OPEN_FILTERED
        self.outcomes: list[tuple[str, Optional[str]]] = []
        self.done = False
        self.open = False


class Scanner:
    """Runs every probe from one loop; prints results in port order.

    The probes wait in the platform's ProbeSet (epoll on Linux: closing a
    socket removes it from the set, so a finished probe costs one close and
    nothing else).  Every probe has the same timeout and they start in
    order, so deadlines only grow: the oldest probe in flight is always the
    next to expire.
    """

    def __init__(self, opts: Options, report: Reporter) -> None:
        self.opts = opts
        self.report = report
        self.host = opts.host or ""
        self.udp = opts.udp
        wait = opts.wait if opts.wait else (UDP_DEFAULT_WAIT if self.udp else DEFAULT_WAIT)
        self.timeout = float(wait)
        # -i paces probes; one -p source port cannot be used twice at once
        self.window = 1 if opts.interval or opts.source_port else _window()
        self.probe_data = opts.udp_probe or b""
        self.has_sockopts = _has_sockopts(opts)
        self.new_socket = backend().nonblocking_socket
        self.probes = backend().probe_set()
        if self.probes.capacity is not None:
            self.window = min(self.window, self.probes.capacity)
        self.by_fd: dict[int, Probe] = {}
        self.flying: deque[Probe] = deque()  # in start order, so by deadline
        self.addrs: list[AddrInfo] = []

    # -- driving ----------------------------------------------------------
    def run(self, ports: list[int]) -> int:
        self.addrs = resolve(self.host, ports[0], self.opts.family, self.opts.socktype,
                             self.opts.numeric)
        probes = [Probe(p) for p in ports]
        next_start = next_print = 0
        last_start = -float("inf")
        interval = self.opts.interval
        try:
            while next_print < len(probes):
                now = time.monotonic()
                while (next_start < len(probes) and len(self.by_fd) < self.window
                       and now >= last_start + interval):
                    try:
                        self._start(probes[next_start], now)
                    except OSError as exc:
                        if exc.errno in (errno.EMFILE, errno.ENFILE) and self.by_fd:
                            self.window = len(self.by_fd)  # out of descriptors
                            break
                        raise PyncError(errno_text(exc.errno or 0)) from None
                    next_start += 1
                    last_start = now
                while next_print < len(probes) and probes[next_print].done:
                    self._print(probes[next_print])
                    next_print += 1
                if next_print < len(probes):
                    more = next_start < len(probes)
                    self._poll(last_start + interval if more and interval else None)
        finally:
            for probe in self.by_fd.values():
                if probe.sock is not None:
                    probe.sock.close()
            self.probes.close()
        return 0 if any(p.open for p in probes) else 1

    def _poll(self, next_start_at: Optional[float]) -> None:
        """Wait for events or the nearest deadline, and settle what is due."""
        while self.flying and self.flying[0].sock is None:
            self.flying.popleft()  # finished before its deadline
        deadlines = [self.flying[0].deadline] if self.flying else []
        if next_start_at is not None:
            deadlines.append(next_start_at)
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 0.0
        for fd in self.probes.poll(timeout):
            probe = self.by_fd.get(fd)
            if probe is not None:
                self._event(probe)
        now = time.monotonic()
        while self.flying and (self.flying[0].sock is None
                               or self.flying[0].deadline <= now):
            probe = self.flying.popleft()
            if probe.sock is not None:
                self._expired(probe)

    # -- one probe ----------------------------------------------------------
    def _start(self, probe: Probe, now: float) -> None:
        """Begin the connect (or send) to the probe's next address.

        Running out of descriptors (EMFILE) propagates with the probe left
        as it was, so the caller can retry it once others finish; any other
        failure is that address's outcome.
        """
        while probe.addr_i < len(self.addrs):
            family, socktype, proto, _, sockaddr = self.addrs[probe.addr_i]
            sock = self.new_socket(family, socktype, proto)  # EMFILE: up
            probe.addr_i += 1
            probe.ip = numeric_host(sockaddr)
            try:
                if self.has_sockopts:
                    self._prepare(sock, family)
                err = sock.connect_ex((sockaddr[0], probe.port, *sockaddr[2:]))
                if self.udp and err == 0:
                    err = self._send_probe(sock)
            except PyncError:
                sock.close()
                raise
            except OSError as exc:  # e.g. -p's port in use
                err = exc.errno or errno.EIO
            if err in CONNECT_IN_PROGRESS:
                probe.sock = sock
                probe.deadline = now + self.timeout
                self.by_fd[sock.fileno()] = probe
                self.probes.add(sock.fileno(), writable=not self.udp)
                self.flying.append(probe)
                return
            if err == 0 and not self.udp and _connected_to_itself(sock):
                err = errno.ECONNREFUSED
            sock.close()
            if err == 0:
                probe.outcomes.append((probe.ip, None))
                probe.open = probe.done = True
                return
            probe.outcomes.append((probe.ip, errno_text(err)))
        probe.done = True

    def _send_probe(self, sock: socket.socket) -> int:
        try:
            sock.send(self.probe_data)
        except OSError as exc:
            return exc.errno or errno.EIO
        return errno.EINPROGRESS  # now wait for a reply, an error or silence

    def _prepare(self, sock: socket.socket, family: int) -> None:
        sockopts.bind_source(sock, self.opts, family)
        sockopts.apply(sock, family, self.opts)

    def _event(self, probe: Probe) -> None:
        sock = probe.sock
        assert sock is not None
        if self.udp:
            try:
                sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                code = exc.errno or errno.EIO
                if code in UDP_REFUSED:
                    code = errno.ECONNREFUSED  # Windows says "reset" for ICMP unreachable
                self._outcome(probe, errno_text(code))
                return
            self._outcome(probe, None)
            return
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not err and _connected_to_itself(sock):
            err = errno.ECONNREFUSED
        self._outcome(probe, errno_text(err) if err else None)

    def _expired(self, probe: Probe) -> None:
        # UDP silence: the datagram may have arrived, or been dropped.
        self._outcome(probe, OPEN_FILTERED if self.udp else TIMED_OUT)

    def _outcome(self, probe: Probe, reason: Optional[str]) -> None:
        """Record how the current address went; go on to the next if it failed."""
        self._release(probe)
        probe.outcomes.append((probe.ip, reason))
        if reason is None or reason == OPEN_FILTERED:
            probe.open = probe.done = True
        elif probe.addr_i < len(self.addrs):
            try:
                self._start(probe, time.monotonic())
            except OSError as exc:  # out of descriptors for the next address
                probe.outcomes.append((probe.ip, errno_text(exc.errno or errno.EIO)))
                probe.done = True
        else:
            probe.done = True

    def _release(self, probe: Probe) -> None:
        if probe.sock is not None:
            fd = probe.sock.fileno()
            del self.by_fd[fd]
            self.probes.forget(fd)
            probe.sock.close()
            probe.sock = None

    # -- output -------------------------------------------------------------
    def _print(self, probe: Probe) -> None:
        if not self.report.verbose:
            return
        proto = self.opts.proto_name
        for ip, reason in probe.outcomes:
            where = self.host if self.host == ip else f"{self.host} ({ip})"
            if reason is None or reason == OPEN_FILTERED:
                svc = service_name(probe.port, proto, self.opts.numeric)
                outcome = "succeeded!" if reason is None else "open|filtered: no reply"
                self.report.line(f"Connection to {where} {probe.port} port "
                                 f"[{proto}/{svc}] {outcome}")
            elif reason == TIMED_OUT:
                self.report.warn(f"connect to {where} port {probe.port} ({proto}) "
                                 "timed out: Operation now in progress")
            else:
                self.report.warn(f"connect to {where} port {probe.port} ({proto}) "
                                 f"failed: {reason}")


def _worker(opts: Options, verbose: int, share: list[int], out: IO[str]) -> None:
    """A forked scan worker: scan a share, report to out, exit (never return)."""
    status = 2
    try:
        backend().default_signals()
        status = Scanner(opts, Reporter(out, verbose)).run(share)
    except PyncError as err:
        Reporter(out).error(err)
    except BaseException:
        pass
    finally:
        try:
            out.flush()
        finally:
            os._exit(status)


def _connected_to_itself(sock: socket.socket) -> bool:
    """A probe whose ephemeral source port is the port probed connects to
    itself (TCP simultaneous open): nothing listens there, so it is closed."""
    try:
        return sock.getsockname() == sock.getpeername()
    except OSError:
        return False


def _has_sockopts(opts: Options) -> bool:
    """Whether probe sockets need anything set before connecting."""
    return any((opts.source_addr is not None, opts.source_port is not None,
                opts.broadcast, opts.sock_debug, opts.tos is not None,
                opts.recv_buf is not None, opts.send_buf is not None,
                opts.ttl is not None, opts.min_ttl is not None))


def _window() -> int:
    """Probes in flight: WINDOW, but well under the open-file limit."""
    soft = backend().fd_limit()
    if soft is None:
        return WINDOW
    return max(1, min(WINDOW, soft - 32))


def run_scan(opts: Options, report: Reporter) -> int:
    """-z mode; exit status 0 if any port is open (UDP: open or open|filtered)."""
    if opts.unix:
        return _scan_unix(opts, report)
    ports = list(opts.ports)
    if opts.randomize:
        random.shuffle(ports)
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    if len(ports) < PARALLEL_MIN or opts.interval or workers < 2 or not backend().can_fork:
        return Scanner(opts, report).run(ports)
    return _scan_in_parallel(opts, report, ports, workers)


def _scan_in_parallel(opts: Options, report: Reporter, ports: list[int],
                      workers: int) -> int:
    """Split a long port list between forked workers, one per core.

    Each worker scans a contiguous share and writes its report to a private
    temporary file; the parent scans the first share itself, then copies the
    others' reports in order, so the output is exactly the sequential one.
    Opening and closing sockets is mostly kernel time, which two cores do
    in parallel: this is what makes a full-range scan faster than nc's.
    """
    size = -(-len(ports) // workers)
    shares = [ports[i:i + size] for i in range(0, len(ports), size)]
    plat = backend()
    children: list[tuple[int, IO[str]]] = []
    out: IO[str]
    try:
        for share in shares[1:]:
            out = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed below
            pid = plat.fork()
            if pid == 0:  # the worker: never returns into the caller's code
                _worker(opts, report.verbose, share, out)
            children.append((pid, out))
        statuses = [Scanner(opts, report).run(shares[0])]
        while children:
            pid, out = children[0]
            code = plat.reap(pid, block=True)
            children.pop(0)
            out.seek(0)
            text = out.read()
            out.close()
            if text:
                report.stream.write(text)
                report.stream.flush()
            if code not in (0, 1):
                return 1  # the worker printed why (or was killed)
            statuses.append(code)
    finally:
        for pid, out in children:  # interrupted: stop and reap the workers
            plat.terminate(pid)
            plat.reap(pid, block=True)
            out.close()
    return 0 if 0 in statuses else 1


def _scan_unix(opts: Options, report: Reporter) -> int:
    """-zU path: does anything accept on the socket?"""
    assert opts.unix_path is not None
    assert AF_UNIX is not None  # -U was refused where there is none
    sock = socket.socket(AF_UNIX, socket.SOCK_DGRAM if opts.udp else socket.SOCK_STREAM)
    try:
        sock.settimeout(opts.wait or DEFAULT_WAIT)
        sock.connect(unix_address(opts.unix_path))
    except (OSError, ValueError) as exc:
        if report.verbose:
            report.warn(f"{opts.unix_path}: {strerror(exc)}")
        return 1
    finally:
        sock.close()
    return 0
