"""TLS as a relay Stream: a session run over memory BIOs on a plain socket.

Imported only when --ssl is given (``ssl`` costs start-up time).  The
contexts, the handshake and the checks of the peer's certificate are the
modes' (modes/tls.py); this module moves records and plaintext once the
handshake is done, and half-closes (close_notify, then FIN) without losing
a byte.
"""

from __future__ import annotations

import socket
import ssl
import time

from ..base.report import PyncError, strerror
from ..platform import EVENT_READ, EVENT_WRITE, backend
from .streams import SocketStream

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

HANDSHAKE_TIMEOUT = 30.0  # a listener is not held forever by a silent client
RECORD_HEADER = 5  # type, version (2), length (2)
RECORD_TYPES = frozenset({20, 21, 22, 23, 24})  # ccs, alert, handshake, data, heartbeat
RECORD_MAX = 16384 + 2048  # the longest TLS ciphertext record
RECV_SIZE = 256 * 1024
WRITE_SIZE = 64 * 1024  # plaintext encrypted per write


class TlsSession:
    """A TLS session run over memory BIOs on a plain socket.

    ``ssl.SSLSocket`` cannot half-close: its ``unwrap()`` calls OpenSSL's
    SSL_shutdown() a second time at once to wait for the peer's
    close_notify, and that call throws away (OpenSSL 3: fails on) any
    application data already in the socket; if the peer's close_notify is
    there, it succeeds and the SSLSocket turns back into a plain socket
    whose reads return raw ciphertext.  Here pync moves the ciphertext
    itself and hands OpenSSL one whole record at a time, so close_notify is
    sent only when OpenSSL holds nothing unread, and reading goes on after.
    """

    def __init__(self, sock: socket.socket, obj: ssl.SSLObject,
                 incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        self.sock = sock
        self.obj = obj
        self.incoming = incoming
        self.outgoing = outgoing
        self.raw = bytearray()  # ciphertext received, not yet given to OpenSSL
        self.raw_pos = 0
        self.raw_eof = False    # the socket's end of stream was seen
        self.out = bytearray()  # ciphertext OpenSSL produced, not yet sent
        # Once a half-close is asked for, OpenSSL is given one record at a
        # time, so that it soon holds nothing unread and close_notify can go;
        # until then it is given every whole record received at once.
        self.one_record = False

    # -- ciphertext in ----------------------------------------------------
    @staticmethod
    def _record_size(buf: bytes | bytearray, start: int) -> int:
        """The size (header included) of the record whose header starts at
        start; 0 if the header is not all there, -1 if it is no TLS record
        header (those bytes go to OpenSSL as they are, for it to reject
        with its own words)."""
        if start + RECORD_HEADER > len(buf):
            return 0
        length = (buf[start + 3] << 8) | buf[start + 4]
        if buf[start] not in RECORD_TYPES or length > RECORD_MAX:
            return -1
        return RECORD_HEADER + length

    def _whole_end(self, buf: bytes | bytearray, start: int) -> int:
        """Where the whole records in buf from start end (start: none is
        whole); only the first one's end when ``one_record``.  Bytes that
        are no record go too (see _record_size).
        """
        while True:
            size = self._record_size(buf, start)
            if size < 0:
                return len(buf)
            if not size or start + size > len(buf):
                return start
            start += size
            if self.one_record:
                return start

    def has_record(self) -> bool:
        return self._whole_end(self.raw, self.raw_pos) > self.raw_pos

    def _give(self, buf: bytes | bytearray, start: int, end: int) -> None:
        """Hand buf[start:end] to OpenSSL, with no copy in Python."""
        with memoryview(buf) as view, view[start:end] as part:
            self.incoming.write(part)

    def feed_one(self) -> bool:
        """Give OpenSSL the next whole record (every whole one held, unless
        ``one_record``); False if there is none yet.

        OpenSSL is never told the socket's end: OpenSSL 3 takes an end
        without close_notify (ncat half-closes so) as a fatal error and then
        refuses to write, when the peer still waits for pync's bytes.  pync
        takes that end as the end of stream, as SSLSocket's
        suppress_ragged_eofs does (a record cut short by it is dropped), and
        goes on sending.
        """
        end = self._whole_end(self.raw, self.raw_pos)
        if end > self.raw_pos:
            self._give(self.raw, self.raw_pos, end)
            self.raw_pos = end
            if self.raw_pos == len(self.raw):
                self.raw.clear()
                self.raw_pos = 0
            return True
        return False

    def receive(self) -> None:
        """One recv() from the socket (BlockingIOError: none).  When
        nothing is held back, its whole records go to OpenSSL at once and
        only the start of a record cut short is kept in ``raw``: no copy."""
        if self.raw_eof:
            return
        if self.raw_pos:
            del self.raw[:self.raw_pos]
            self.raw_pos = 0
        data = self.sock.recv(RECV_SIZE)
        if not data:
            self.raw_eof = True
            return
        start = self._complete_held(data) if self.raw and not self.one_record else 0
        if self.raw or self.one_record:
            self.raw += memoryview(data)[start:]
            return
        end = self._whole_end(data, start)
        if end > start:
            self._give(data, start, end)
        if end < len(data):
            self.raw += memoryview(data)[end:]

    def _complete_held(self, data: bytes) -> int:
        """The record whose start ``raw`` holds, completed from data (and
        handed to OpenSSL once whole): how many bytes of data it took.
        Only those are copied, not the whole of data."""
        raw = self.raw
        used = min(max(RECORD_HEADER - len(raw), 0), len(data))
        raw += memoryview(data)[:used]
        size = self._record_size(raw, 0)
        if size <= 0:
            return used  # no whole header yet, or no record: the rest joins it
        take = min(size - len(raw), len(data) - used)
        raw += memoryview(data)[used:used + take]
        if len(raw) == size:
            self._give(raw, 0, len(raw))
            raw.clear()
        return used + take

    def quiet(self) -> bool:
        """OpenSSL holds nothing unread: SSL_shutdown() would discard nothing."""
        return self.obj.pending() == 0 and self.incoming.pending == 0

    # -- ciphertext out ---------------------------------------------------
    def collect(self) -> None:
        """Move what OpenSSL wrote into ``out``."""
        if self.outgoing.pending:
            self.out += self.outgoing.read()

    def flush(self) -> bool:
        """Send what can go without waiting; True when ``out`` is empty."""
        if self.outgoing.pending and not self.out:
            # The common case, sent as OpenSSL wrote it: no copy into ``out``.
            data = self.outgoing.read()
            try:
                n = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.out += data  # kept, as the slow path keeps it, for the error's handler
                raise
            if n == len(data):
                return True
            self.out += memoryview(data)[n:]
            return False
        self.collect()
        while self.out:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return False
            del self.out[:n]
        return True

    def advance_handshake(self) -> int:
        """Take the handshake as far as it goes without waiting: 0 once it
        is complete (and our last flight sent), else the event to wait for
        on the socket (EVENT_READ, EVENT_WRITE).  OpenSSL's errors propagate;
        the peer's end of stream before the end is SSLEOFError."""
        while True:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                if not self.flush():
                    return EVENT_WRITE
                if self.feed_one():
                    continue
                if self.raw_eof:  # the socket ended, and OpenSSL wants more
                    raise ssl.SSLEOFError("EOF occurred during the handshake") from None
                try:
                    self.receive()
                except (BlockingIOError, InterruptedError):
                    return EVENT_READ
                continue
            return 0 if self.flush() else EVENT_WRITE  # our last flight (a server's tickets)

    def flush_until(self, deadline: float) -> None:
        """Send all of ``out``, waiting for the socket until deadline."""
        while not self.flush():
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            wait_fd(self.sock, EVENT_WRITE, left)


def wait_fd(sock: socket.socket, events: int, timeout: float) -> int:
    """Wait (bounded) for events on sock; the events that came (0: none)."""
    return backend().wait_fd(sock.fileno(), events, timeout)


def reason(exc: BaseException) -> str:
    """OpenSSL's reason in words (``tlsv1 alert unknown ca``), else strerror."""
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.strerror or str(exc)
        return reason.replace("_", " ").lower() if reason.isupper() else reason
    return strerror(exc)


class TlsStream(SocketStream):
    """A TLS session over a connected socket: plaintext in, plaintext out.

    Never spliced (the kernel sees only ciphertext).  ``pending`` tells the
    relay about received bytes poll() can no longer see.

    A write encrypts, then sends; when the socket takes only part of the
    ciphertext, the write raises BlockingIOError and the relay retries with
    the same bytes, which then count as written once the rest has gone (as
    OpenSSL's own SSL_write() retries work).  So the relay's buffer empties
    only when every byte is on its way.

    A TLS error after the handshake (a fatal alert: a server refusing the
    client's certificate, say) ends the run with ``pync: TLS: reason`` and
    status 1, as OpenBSD nc's ``tls read failed``; a reset stays a network
    error (reported under -v), as for plain TCP.
    """

    zero_copy = False
    holds_bytes = True
    close_wait = HANDSHAKE_TIMEOUT

    def wake_at(self, nbytes: int) -> bool:
        return False  # records and pending(): the relay must see each one

    def __init__(self, tls: TlsSession, label: str) -> None:
        super().__init__(tls.sock, label)
        self.tls = tls
        self.owed = 0            # plaintext encrypted whose ciphertext is not all sent
        self.notified = False    # close_notify queued
        self.half_close = False  # -N asked for close_notify and FIN
        self.fin_sent = False
        self.eof = False         # the end of stream was seen
        self.eof_told = False    # ... and returned to the relay
        self.error: Optional[Exception] = None  # to raise at the next read

    def read_into(self, buf: memoryview) -> int:
        tls = self.tls
        if self.error is not None:
            raise self.error
        if self.eof:
            self.eof_told = True
            return 0
        total = 0
        received = False
        try:
            while total < len(buf):
                try:
                    n: int = tls.obj.read(len(buf) - total, buf[total:])  # type: ignore[assignment]
                except ssl.SSLWantReadError:
                    self._finish_half_close()  # OpenSSL holds nothing unread now
                    if tls.feed_one():
                        continue
                    if tls.raw_eof:  # every record read: the end of stream
                        self.eof = True
                        break
                    if total:
                        break
                    if received:
                        raise BlockingIOError from None
                    received = True
                    tls.receive()  # BlockingIOError: nothing there yet
                    continue
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    # close_notify, or the socket closed without one (as
                    # SSLSocket's suppress_ragged_eofs): end of stream.
                    self.eof = True
                    break
                if n == 0:
                    self.eof = True
                    break
                total += n
        except ssl.SSLError as exc:
            err = PyncError(f"TLS: {reason(exc)}")  # an alert: the session is broken
            if not total:
                raise err from None
            self.error = err
        except OSError as exc:
            if not total or isinstance(exc, BlockingIOError):
                raise
            self.error = exc
        finally:
            self._flush_quietly()  # what reading produced (a KeyUpdate, say)
            if self.half_close and not self.fin_sent:
                self._finish_half_close()  # once OpenSSL holds nothing unread
        if not total:
            self.eof_told = self.eof
        return total

    def write(self, data: memoryview) -> int:
        tls = self.tls
        if not tls.flush():
            raise BlockingIOError
        if self.owed:  # the relay's retry of a write whose ciphertext has now gone
            n, self.owed = self.owed, 0
            return n
        try:
            n = tls.obj.write(data[:WRITE_SIZE])
        except ssl.SSLError as exc:
            raise PyncError(f"TLS: {reason(exc)}") from None
        if not tls.flush():
            self.owed = n
            raise BlockingIOError
        return n

    def pending(self) -> bool:
        """Something poll() cannot see: bytes OpenSSL or pync holds, or an
        end of stream or error found while returning earlier bytes."""
        tls = self.tls
        if self.error is not None or self.eof:
            return not self.eof_told
        return tls.obj.pending() > 0 or tls.incoming.pending > 0 or tls.has_record()

    def shutdown_write(self) -> None:
        """-N: send close_notify, then FIN; reading goes on.

        Deferred while OpenSSL holds decrypted bytes not yet read (its
        shutdown would discard them): the next read finishes it.  When the
        socket is full, pync waits for room, but only until the peer sends
        something (it may be waiting for pync to read); then the reads that
        follow finish sending.
        """
        self.half_close = True
        self.tls.one_record = True
        self._finish_half_close()

    def _finish_half_close(self) -> None:
        if not self.half_close or self.fin_sent or not self.tls.quiet():
            return
        self._notify()
        tls = self.tls
        try:
            deadline = time.monotonic() + self.close_wait
            while not tls.flush():
                left = deadline - time.monotonic()
                if left <= 0 or wait_fd(tls.sock, EVENT_WRITE | EVENT_READ,
                                         left) & EVENT_READ:
                    return  # the relay reads; a later read sends the rest
        except OSError:
            pass  # the peer is gone: nothing more to send
        self.fin_sent = True
        super().shutdown_write()

    def closing(self) -> int:
        if not self.half_close or self.fin_sent:
            return 0
        # close_notify queued but not all sent: room; not queued yet, since
        # OpenSSL holds bytes unread (its shutdown would drop them): a read
        return EVENT_WRITE if self.notified else EVENT_READ

    def _notify(self) -> None:
        """Queue close_notify (OpenSSL sends it once; pync never waits for the peer's)."""
        if self.notified:
            return
        self.notified = True
        try:
            self.tls.obj.unwrap()
        except ssl.SSLWantReadError:
            pass  # close_notify queued; the peer's has not come yet
        except (ssl.SSLError, ValueError):
            pass  # the session is already broken
        self.tls.collect()

    def _flush_quietly(self) -> None:
        try:
            self.tls.flush()
        except OSError:
            pass  # reported by the next write, if there is one

    def close(self) -> None:
        self._notify()
        self._flush_quietly()  # best effort: a peer that does not read gets none
        super().close()
