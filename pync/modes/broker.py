"""--broker and --chat: many clients in one epoll loop, relayed to each other.

--broker (ncat's meaning): bytes from one client go unchanged to every other
client and to stdout; stdin goes to every client.  --chat adds names and
lines: each client is ``user<fd>`` until it says ``/nick NAME``; each line
reaches the others as ``<user5> hello``; joins, leaves and renames are
announced; control characters other than tab are shown escaped (``\\x1b``),
so no user can drive another's terminal.

Every client has a bounded output buffer: one that does not read (MAX_BACKLOG
bytes waiting) is disconnected, so it never stalls the others.  A client
leaving, resetting or sending garbage never ends the broker.

Fan-out is batched per turn of the loop: what all ready clients (and stdin)
sent in one turn is queued as a round and joined once; then each client is
given the round less its own bytes and less what came before it joined, in
a few appends and one send() for each ROUND_BYTES.  With 10,000 clients talking at once
that is one send per client per turn, not one per client per line (which
would be 10^8).  A round is fanned out early, between two clients' reads,
once it holds ROUND_BYTES, and handed out at most about ROUND_BYTES at a
time, so a client that reads is never dropped for a burst it could have
taken (not even the burst of a chat's leavers' unfinished lines).
"""

from __future__ import annotations

import errno
import socket

from ..base.options import Options
from ..base.report import Reporter, errno_text
from ..net.addr import describe_peer, peer_ip
from ..platform import EVENT_READ, EVENT_WRITE, backend
from ..relay.streams import FdStream
from .accepting import Acceptor
from .access import AccessList

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Optional

MAX_BACKLOG = 1024 * 1024      # bytes waiting for one client before it is dropped
MAX_LINE = 64 * 1024           # a chat line longer than this is cut there
DEFAULT_MAX_CONNS = 100        # as ncat
FD_SPARE = 64  # descriptors beyond one per client (stdio, listener, refusals)
PAUSE = 0.1  # seconds between tries of a listener out of descriptors
READ_SIZE = 65536
ROUND_BYTES = 256 * 1024      # a round this large is fanned out before the turn ends,
                              # and a pass of the fan-out hands out about this much
_GONE = object()  # a descriptor no longer watched


class Client:
    """One connected client: its socket, name and pending output."""

    __slots__ = ("events", "fd", "line", "name", "out", "since", "sock", "until", "where")

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.where = where
        self.name = f"user{self.fd}"
        self.out = bytearray()
        self.line = bytearray()  # chat: a line still being typed
        self.events = 0  # what the waiter watches its socket for
        self.since = 0   # the first piece of the current round it gets (joined in it)
        self.until: Optional[int] = None  # left: the piece of the round it gets no more


class Piece:
    """Bytes for the room: every client but ``skip`` gets them, stdout too if
    ``to_stdout``."""

    __slots__ = ("data", "skip", "to_stdout")

    def __init__(self, data: bytes, skip: Optional[Client], to_stdout: bool) -> None:
        self.data = data
        self.skip = skip
        self.to_stdout = to_stdout


def escape_controls(line: bytes) -> bytes:
    """Show control characters (not tab) as ``\\xNN``: nobody drives a terminal."""
    out = bytearray()
    for byte in line:
        if (byte < 0x20 and byte != 0x09) or byte == 0x7F:
            out += b"\\x%02x" % byte
        else:
            out.append(byte)
    return bytes(out)


class Broker:
    """The listening socket, its clients and pync's own stdio, in one loop."""

    def __init__(self, server: socket.socket, opts: Options, local: FdStream,
                 report: Reporter, access: AccessList) -> None:
        self.server = server
        self.opts = opts
        self.local = local
        self.report = report
        self.access = access
        self.chat = opts.chat
        self.max_conns = opts.max_conns or DEFAULT_MAX_CONNS
        self.clients: dict[int, Client] = {}
        self.waiter = backend().many_waiter()
        self.keys: dict[int, object] = {}  # fd -> None (the listener), "stdin" or a Client
        self.stdin_fd = None if opts.recv_only else local.read_fd
        self.to_stdout = not opts.send_only
        self.stdin_always_ready = False
        self.stdin_line = bytearray()
        self.stdin_buf = memoryview(bytearray(READ_SIZE))
        self.read_buf = memoryview(bytearray(READ_SIZE))  # every client's recv
        self.round: list[Piece] = []  # what this turn of the loop delivers
        self.round_bytes = 0
        self.leaving: list[Client] = []  # ended, closed once given this turn's share
        self.acceptor = Acceptor(server, report)
        self.paused = False  # the listener is out of the selector (EMFILE)

    # -- the loop ---------------------------------------------------------
    def run(self) -> int:
        backend().raise_fd_limit(self.max_conns + FD_SPARE)
        self.server.setblocking(False)
        self.local.start()
        self._watch(self.server.fileno(), EVENT_READ, None)
        if self.stdin_fd is not None and self.stdin_fd in self.local.always_ready:
            self.stdin_always_ready = True  # a file the platform cannot wait on
        elif self.stdin_fd is not None:
            try:
                self._watch(self.stdin_fd, EVENT_READ, "stdin")
            except (PermissionError, ValueError):  # a regular file: always readable
                self.stdin_always_ready = True
        try:
            while True:
                # A bridge's queue may hold stdin that its socket no longer shows.
                held = self.stdin_fd is not None and self.local.pending()
                timeout: Optional[float] = 0 if self.stdin_always_ready or held else None
                if self.paused:
                    timeout = PAUSE  # retry the listener even if no client leaves
                ready = self.waiter.poll(timeout)
                if self.paused and not ready:
                    self._watch(self.server.fileno(), EVENT_READ, None)
                    self.paused = False
                for fd, events in ready:
                    data = self.keys.get(fd, _GONE)
                    if data is None:
                        self._accept()
                    elif data == "stdin":
                        self._read_stdin()
                    elif isinstance(data, Client):
                        self._client_event(data, events)
                    if self.round_bytes >= ROUND_BYTES:  # (never inside one client's lines)
                        self._fan_out()
                if self.stdin_always_ready or held:
                    self._read_stdin()
                self._fan_out()
        finally:
            for client in [*self.clients.values(), *self.leaving]:
                client.sock.close()
            self.waiter.close()
            self.acceptor.close()

    def _watch(self, fd: int, events: int, data: object) -> None:
        if fd in self.keys:
            self.waiter.modify(fd, events)
        else:
            self.waiter.register(fd, events)
        self.keys[fd] = data

    def _unwatch(self, fd: int) -> None:
        if self.keys.pop(fd, _GONE) is not _GONE:
            self.waiter.unregister(fd)

    # -- clients coming and going -----------------------------------------
    def _accept(self) -> None:
        while True:
            got = self.acceptor.accept()
            if got is None:
                if self.acceptor.starved and not self.paused:
                    # Not even a descriptor to refuse with: stop polling the
                    # listener (it would spin) until a client leaves.
                    self._unwatch(self.server.fileno())
                    self.paused = True
                return
            sock, peer = got
            ip = peer_ip(peer)
            if not self.access.permits(ip):
                self._refuse(sock, f"not allowed ({ip})")
                continue
            if len(self.clients) >= self.max_conns:
                self._refuse(sock, f"connection limit reached ({self.max_conns})")
                continue
            self._join(sock, describe_peer(peer, self.opts.numeric, self.opts.unix_path))

    def _join(self, sock: socket.socket, where: str) -> Client:
        """A client is in the room: it hears what is said from now on."""
        sock.setblocking(False)
        client = Client(sock, where)
        client.since = len(self.round)
        self.clients[client.fd] = client
        self._watch(client.fd, EVENT_READ, client)
        client.events = EVENT_READ
        self.report.received(where)
        if self.chat:
            self._announce(f"{client.name} has joined", skip=client)
        return client

    def _refuse(self, sock: socket.socket, why: str) -> None:
        sock.close()
        self.report.denied(why)

    def _drop(self, client: Client, why: Optional[str] = None) -> None:
        """client leaves (why: it failed; None: it ended).  One that ended may
        still read: the fan-out at the end of this turn gives it what was said
        before it left, as one-by-one delivery would have, sends what its
        socket takes then, and closes it."""
        if self.clients.pop(client.fd, None) is None:
            return
        self._unwatch(client.fd)
        if why is None:
            client.until = len(self.round)
            self.leaving.append(client)
        else:
            client.sock.close()
        if self.paused:  # a descriptor is free again: take connections
            self._watch(self.server.fileno(), EVENT_READ, None)
            self.paused = False
        if why and self.report.verbose:
            self.report.warn(f"{client.name} ({client.where}) disconnected: {why}")
        if self.chat:
            if client.line:
                self._chat_line(client, bytes(client.line))
            self._announce(f"{client.name} has left")

    # -- I/O ----------------------------------------------------------------
    def _client_event(self, client: Client, events: int) -> None:
        if events & EVENT_READ:
            try:
                n = client.sock.recv_into(self.read_buf)
            except (BlockingIOError, InterruptedError):
                n = -1
            except OSError as exc:
                self._drop(client, errno_text(exc.errno or errno.EIO))
                return
            if n == 0:
                self._drop(client)
                return
            if n > 0:
                self._from_client(client, bytes(self.read_buf[:n]))
        if events & EVENT_WRITE and client.fd in self.clients:
            self._flush(client)

    def _read_stdin(self) -> None:
        assert self.stdin_fd is not None
        try:
            data = bytes(self.stdin_buf[:self.local.read_into(self.stdin_buf)])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # stdin is done; the clients carry on
            if not self.stdin_always_ready:
                self._unwatch(self.stdin_fd)
            self.stdin_fd = None
            self.stdin_always_ready = False
            return
        if self.chat:
            for line in _lines(self.stdin_line, data):
                self._deliver(b"<server> " + escape_controls(line) + b"\n", to_stdout=False)
        else:
            self._deliver(data, to_stdout=False)


    def _from_client(self, client: Client, data: bytes) -> None:
        if not self.chat:
            self._deliver(data, skip=client)
            return
        for line in _lines(client.line, data):
            self._chat_line(client, line)

    def _chat_line(self, client: Client, line: bytes) -> None:
        if line.startswith(b"/nick "):
            name = escape_controls(line[6:].strip().split(b" ")[0][:32]).decode(
                "utf-8", "replace")
            if name:
                old, client.name = client.name, name
                self._announce(f"{old} is now known as {name}")
            return
        self._deliver(b"<" + client.name.encode() + b"> " + escape_controls(line) + b"\n",
                      skip=client)

    def _announce(self, text: str, skip: Optional[Client] = None) -> None:
        self._deliver(f"<announce> {text}\n".encode(), skip=skip)

    def _deliver(self, data: bytes, skip: Optional[Client] = None,
                 to_stdout: bool = True) -> None:
        """Add data to this round, for every client but skip (and stdout)."""
        self.round.append(Piece(data, skip, to_stdout))
        self.round_bytes += len(data)

    def _fan_out(self) -> None:
        """Give each client what the round holds for it, and send it what it can
        take, about ROUND_BYTES at a time; drops in the middle (which may
        announce) add to what is left."""
        while self.round:
            self._fan_out_pass()
        for client in self.leaving:
            if client.out:
                try:
                    client.sock.send(client.out)
                except OSError:
                    pass
            client.sock.close()
        self.leaving = []

    def _fan_out_pass(self) -> None:
        """Hand out the first ROUND_BYTES or so of the round."""
        taken, size = 0, 0
        while taken < len(self.round) and (not taken or size < ROUND_BYTES):
            size += len(self.round[taken].data)
            taken += 1
        pieces, self.round = self.round[:taken], self.round[taken:]
        self.round_bytes -= size
        chunk = pieces[0].data if len(pieces) == 1 else b"".join(p.data for p in pieces)
        view = memoryview(chunk)
        starts = []  # where each piece begins in chunk
        own: dict[int, list[tuple[int, int]]] = {}  # id(client) -> spans it sent
        at = 0
        for piece in pieces:
            starts.append(at)
            if piece.skip is not None:
                own.setdefault(id(piece.skip), []).append((at, at + len(piece.data)))
            at += len(piece.data)
        if self.to_stdout and self.local.write_fd is not None:
            shown = [p.data for p in pieces if p.to_stdout]
            if shown:
                self.local.write_all(shown[0] if len(shown) == 1 else b"".join(shown))
        for client in self.leaving:
            _give(client, view, starts, own.get(id(client), ()), taken)
        for client in list(self.clients.values()):
            if self.clients.get(client.fd) is not client:
                continue  # dropped in this loop (its send failed)
            was_empty = not client.out
            _give(client, view, starts, own.get(id(client), ()), taken)
            if len(client.out) > MAX_BACKLOG:
                self._drop(client, "not reading")
            elif was_empty and client.out:
                self._flush(client)

    def _flush(self, client: Client) -> None:
        try:
            n = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self._drop(client, errno_text(exc.errno or errno.EIO))
            return
        del client.out[:n]
        events = EVENT_READ | (EVENT_WRITE if client.out else 0)
        if events != client.events:
            self.waiter.modify(client.fd, events)
            client.events = events


def _give(client: Client, view: memoryview, starts: list[int],
          own: Iterable[tuple[int, int]], taken: int) -> None:
    """Add to client.out its share of a pass (view: the pass's ``taken``
    pieces joined, starting at ``starts``): from where it joined to where it
    left, less the spans it sent itself; its marks then point into what is
    left of the round."""
    at = len(view)
    begin = starts[client.since] if client.since < taken else at
    end = at
    if client.until is not None:
        end = starts[client.until] if client.until < taken else at
        client.until = max(client.until - taken, 0)
    client.since = max(client.since - taken, 0)
    for start, stop in own:
        if start >= end:
            break
        if start > begin:
            client.out += view[begin:start]
        begin = max(begin, stop)
    if begin < end:
        client.out += view if begin == 0 and end == at else view[begin:end]


def _lines(pending: bytearray, data: bytes) -> list[bytes]:
    """Complete lines (without CR LF or LF) from pending + data; keep the rest."""
    pending += data
    lines = []
    while True:
        nl = pending.find(b"\n")
        if nl < 0:
            if len(pending) > MAX_LINE:
                lines.append(bytes(pending[:MAX_LINE]))
                del pending[:MAX_LINE]
                continue
            return lines
        line = bytes(pending[:nl])
        del pending[:nl + 1]
        lines.append(line[:-1] if line.endswith(b"\r") else line)
