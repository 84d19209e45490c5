"""--ssl: TLS contexts, the handshake, and TLS as a relay Stream.

Imported only when --ssl is given (``ssl`` costs start-up time).

Secure by default, as socat and OpenBSD's nc are and ncat is not: a client
verifies the server's chain against the system's trust store and checks
its host name; TLS 1.2 is the minimum.  ``--ssl-insecure`` turns checking
off (and says so), ``--ssl-pin sha256:HEX`` accepts exactly one
certificate whatever signed it.  A server without ``--ssl-cert`` makes a
temporary self-signed certificate when the ``cryptography`` package is
installed (``pip install 'pync[tls]'``) and shows its fingerprint under -v,
so a client can pin it.

Every failure is one line: ``pync: TLS: certificate verify failed:
self-signed certificate``.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import select
import socket
import ssl
import tempfile
import time

from .options import Options
from .report import PyncError, Reporter, strerror
from .streams import SocketStream

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

HANDSHAKE_TIMEOUT = 30.0  # a listener is not held forever by a silent client
ALERT_WAIT = 1.0  # how long a failed handshake tries to tell the peer why
RECORD_HEADER = 5  # type, version (2), length (2)
RECORD_TYPES = frozenset({20, 21, 22, 23, 24})  # ccs, alert, handshake, data, heartbeat
RECORD_MAX = 16384 + 2048  # the longest TLS ciphertext record
RECV_SIZE = 256 * 1024
WRITE_SIZE = 64 * 1024  # plaintext encrypted per write


def fingerprint(der: bytes) -> str:
    """``sha256:hex`` of a DER certificate, the form --ssl-pin takes."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _load_chain(ctx: ssl.SSLContext, cert: str, key: Optional[str]) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError, ValueError) as exc:  # ValueError: a NUL in a path
        raise PyncError(f"TLS: cannot load certificate {cert}: {_reason(exc)}") from None


def _load_trust(ctx: ssl.SSLContext, path: str) -> None:
    try:
        ctx.load_verify_locations(path)
    except (OSError, ssl.SSLError, ValueError) as exc:  # ValueError: a NUL in a path
        raise PyncError(f"TLS: cannot load trust file {path}: {_reason(exc)}") from None


def _common(ctx: ssl.SSLContext, opts: Options) -> None:
    """Settings both sides share: TLS 1.2 minimum, ALPN, ciphers."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if opts.ssl_alpn:
        try:
            ctx.set_alpn_protocols([p for p in opts.ssl_alpn.split(",") if p])
        except (UnicodeError, ValueError, ssl.SSLError):
            raise PyncError("TLS: --ssl-alpn takes ASCII protocol names of 1 to 255 "
                            f"bytes: {opts.ssl_alpn}") from None
    if opts.ssl_ciphers:
        try:
            ctx.set_ciphers(opts.ssl_ciphers)
        except (ssl.SSLError, ValueError):
            raise PyncError(f"TLS: no cipher matches: {opts.ssl_ciphers}") from None


def client_context(opts: Options, report: Reporter) -> ssl.SSLContext:
    """Verify chain and host name, unless --ssl-insecure or --ssl-pin."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    _common(ctx, opts)
    if opts.ssl_trustfile:
        _load_trust(ctx, opts.ssl_trustfile)
    if opts.ssl_cert:
        _load_chain(ctx, opts.ssl_cert, opts.ssl_key)
    if opts.ssl_pin or opts.ssl_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the pin is checked after the handshake
    if opts.ssl_insecure and not opts.ssl_pin:
        report.warn("warning: --ssl-insecure: the server's certificate is not verified")
    return ctx


def server_context(opts: Options, report: Reporter) -> ssl.SSLContext:
    """Serve --ssl-cert/--ssl-key, or a temporary self-signed certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _common(ctx, opts)
    if opts.ssl_cert:
        _load_chain(ctx, opts.ssl_cert, opts.ssl_key)
    else:
        der = _temporary_certificate(ctx, opts.host)
        if report.verbose:
            report.line(f"TLS certificate (temporary, self-signed): {fingerprint(der)}")
    if opts.ssl_verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if opts.ssl_trustfile:
            _load_trust(ctx, opts.ssl_trustfile)
        else:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return ctx


def _temporary_certificate(ctx: ssl.SSLContext, host: Optional[str]) -> bytes:
    """Make a one-day self-signed certificate for this run; its DER bytes."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise PyncError("TLS: -l --ssl needs --ssl-cert and --ssl-key, or the "
                        "cryptography package to make a temporary certificate "
                        "(pip install 'pync[tls]')") from None
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pync temporary")])
    alt: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                   x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                   x509.IPAddress(ipaddress.ip_address("::1"))]
    if host:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(key, hashes.SHA256()))
    with tempfile.TemporaryDirectory(prefix="pync-tls-") as tmp:
        path = os.path.join(tmp, "cert.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        ctx.load_cert_chain(path)
    return cert.public_bytes(serialization.Encoding.DER)


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

    # -- ciphertext in ----------------------------------------------------
    def _record_end(self) -> int:
        """Where the first whole record in ``raw`` ends, 0 if none is whole.

        Bytes that are no TLS record header at all are handed over as they
        are, for OpenSSL to reject with its own words.
        """
        avail = len(self.raw) - self.raw_pos
        if avail < RECORD_HEADER:
            return 0
        head = self.raw[self.raw_pos:self.raw_pos + RECORD_HEADER]
        length = int.from_bytes(head[3:5], "big")
        if head[0] not in RECORD_TYPES or length > RECORD_MAX:
            return len(self.raw)
        end = self.raw_pos + RECORD_HEADER + length
        return end if end <= len(self.raw) else 0

    def has_record(self) -> bool:
        return self._record_end() > 0

    def feed_one(self) -> bool:
        """Give OpenSSL the next whole record; False if there is none yet.

        At the socket's end, after the last record, OpenSSL is told EOF.
        """
        end = self._record_end()
        if end:
            self.incoming.write(bytes(self.raw[self.raw_pos:end]))
            self.raw_pos = end
            if self.raw_pos == len(self.raw):
                self.raw.clear()
                self.raw_pos = 0
            return True
        if self.raw_eof and not self.incoming.eof:
            if self.raw_pos < len(self.raw):  # a truncated record
                self.incoming.write(bytes(self.raw[self.raw_pos:]))
                self.raw.clear()
                self.raw_pos = 0
            self.incoming.write_eof()
            return True
        return False

    def receive(self) -> None:
        """One recv() from the socket into ``raw`` (BlockingIOError: none)."""
        if self.raw_eof:
            return
        if self.raw_pos:
            del self.raw[:self.raw_pos]
            self.raw_pos = 0
        data = self.sock.recv(RECV_SIZE)
        if data:
            self.raw += data
        else:
            self.raw_eof = True

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
        self.collect()
        while self.out:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return False
            del self.out[:n]
        return True

    def flush_until(self, deadline: float) -> None:
        """Send all of ``out``, waiting for the socket until deadline."""
        while not self.flush():
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            _wait_fd(self.sock, select.POLLOUT, left)


def handshake(sock: socket.socket, ctx: ssl.SSLContext, opts: Options,
              report: Reporter, server_side: bool,
              server_name: Optional[str] = None, received: bytes = b"") -> TlsSession:
    """Complete the handshake over sock (bounded by -w, else 30 s).

    ``received``: bytes already read from sock.  Checks --ssl-pin, prints
    what was agreed under -v, and turns every
    failure into one PyncError line.
    """
    name = None if server_side else (opts.ssl_servername or server_name)
    if not server_side and ctx.check_hostname and not name:
        raise PyncError("TLS: no host name to verify (give --ssl-servername)")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        obj = ctx.wrap_bio(incoming, outgoing, server_side=server_side, server_hostname=name)
    except (UnicodeError, ValueError):
        raise PyncError(f"TLS: invalid server name: {name}") from None
    tls = TlsSession(sock, obj, incoming, outgoing)
    tls.raw += received  # ciphertext read before the handshake (after a proxy's reply)
    sock.setblocking(False)
    deadline = time.monotonic() + (float(opts.wait) if opts.wait else HANDSHAKE_TIMEOUT)
    try:
        _drive_handshake(tls, deadline)
    except ssl.SSLCertVerificationError as exc:
        _send_alert(tls)
        raise PyncError(f"TLS: certificate verify failed: {exc.verify_message}") from None
    except socket.timeout:
        raise PyncError("TLS: handshake timed out") from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        raise PyncError("TLS: the peer closed the connection during the handshake") from None
    except ssl.SSLError as exc:
        _send_alert(tls)
        raise PyncError(f"TLS: handshake failed: {_reason(exc)}") from None
    except OSError as exc:
        raise PyncError(f"TLS: handshake failed: {strerror(exc)}") from None
    der = obj.getpeercert(binary_form=True)
    if opts.ssl_pin and not server_side:
        got = fingerprint(der) if der else "no certificate"
        if got != "sha256:" + opts.ssl_pin:
            raise PyncError(f"TLS: certificate does not match --ssl-pin (got {got})")
    if report.verbose:
        report.line(_describe(obj, der))
    return tls


def _drive_handshake(tls: TlsSession, deadline: float) -> None:
    """Run do_handshake(), moving records both ways, until it completes."""
    while True:
        try:
            tls.obj.do_handshake()
        except ssl.SSLWantReadError:
            tls.flush_until(deadline)
            while not tls.feed_one():
                if tls.raw_eof:  # OpenSSL was told, and still wants more
                    raise ssl.SSLEOFError("EOF occurred during the handshake") from None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("timed out") from None
                _wait_fd(tls.sock, select.POLLIN, left)
                try:
                    tls.receive()
                except (BlockingIOError, InterruptedError):
                    pass
            continue
        tls.flush_until(deadline)  # our last flight (and a server's tickets)
        return


def _send_alert(tls: TlsSession) -> None:
    """Tell the peer why the handshake failed (OpenSSL queued an alert)."""
    try:
        tls.flush_until(time.monotonic() + ALERT_WAIT)
    except OSError:
        pass


def _wait_fd(sock: socket.socket, events: int, timeout: float) -> int:
    """Wait (bounded) for events on sock; the events that came (0: none)."""
    poller = select.poll()
    poller.register(sock.fileno(), events)
    ready = poller.poll(max(timeout, 0.0) * 1000)
    return ready[0][1] if ready else 0


def _describe(tls: ssl.SSLObject, der: Optional[bytes]) -> str:
    """``TLS TLSv1.3 TLS_AES_256_GCM_SHA384, peer certificate sha256:...``."""
    cipher = tls.cipher()
    text = f"TLS {tls.version()} {cipher[0] if cipher else ''}".rstrip()
    alpn = tls.selected_alpn_protocol()
    if alpn:
        text += f", ALPN {alpn}"
    if der:
        text += f", peer certificate {fingerprint(der)}"
    return text


def _reason(exc: BaseException) -> str:
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
                    n = tls.obj.read(len(buf) - total, buf[total:])
                except ssl.SSLWantReadError:
                    self._finish_half_close()  # OpenSSL holds nothing unread now
                    if tls.feed_one():
                        continue
                    if tls.raw_eof:  # OpenSSL was told, and still wants more
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
            err = PyncError(f"TLS: {_reason(exc)}")  # an alert: the session is broken
            if not total:
                raise err from None
            self.error = err
        except OSError as exc:
            if not total or isinstance(exc, BlockingIOError):
                raise
            self.error = exc
        finally:
            self._flush_quietly()  # what reading produced (a KeyUpdate, say)
            if self.notified and not self.fin_sent:
                self._finish_half_close()
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
            raise PyncError(f"TLS: {_reason(exc)}") from None
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
        self._finish_half_close()

    def _finish_half_close(self) -> None:
        if not self.half_close or self.fin_sent or not self.tls.quiet():
            return
        self._notify()
        tls = self.tls
        try:
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT
            while not tls.flush():
                left = deadline - time.monotonic()
                if left <= 0 or _wait_fd(tls.sock, select.POLLOUT | select.POLLIN,
                                         left) & select.POLLIN:
                    return  # the relay reads; a later read sends the rest
        except OSError:
            pass  # the peer is gone: nothing more to send
        self.fin_sent = True
        super().shutdown_write()

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
