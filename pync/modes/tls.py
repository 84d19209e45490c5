"""--ssl: TLS contexts, the handshake and the checks of the peer.

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
import socket
import ssl
import tempfile
import time

from ..base.options import Options
from ..base.report import PyncError, Reporter, strerror
from ..platform.base import O_BINARY
from ..relay.tls import HANDSHAKE_TIMEOUT, TlsSession, TlsStream, reason, wait_fd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

ALERT_WAIT = 1.0  # how long a failed handshake tries to tell the peer why


def fingerprint(der: bytes) -> str:
    """``sha256:hex`` of a DER certificate, the form --ssl-pin takes."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _load_chain(ctx: ssl.SSLContext, cert: str, key: Optional[str]) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError, ValueError) as exc:  # ValueError: a NUL in a path
        raise PyncError(f"TLS: cannot load certificate {cert}: {reason(exc)}") from None


def _load_trust(ctx: ssl.SSLContext, path: str) -> None:
    try:
        ctx.load_verify_locations(path)
    except (OSError, ssl.SSLError, ValueError) as exc:  # ValueError: a NUL in a path
        raise PyncError(f"TLS: cannot load trust file {path}: {reason(exc)}") from None


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


def server_context(opts: Options, report: Reporter, temporary: Optional[bytes] = None
                   ) -> tuple[ssl.SSLContext, Optional[bytes]]:
    """Serve --ssl-cert/--ssl-key, or a temporary self-signed certificate.

    Returns the context and, for a temporary certificate, its PEM (key and
    certificate): a spawned worker is given it (``temporary``) to serve the
    same certificate, whose fingerprint was shown once.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _common(ctx, opts)
    if opts.ssl_cert:
        _load_chain(ctx, opts.ssl_cert, opts.ssl_key)
    else:
        if temporary is None:
            temporary, der = _temporary_certificate(opts.host)
            if report.verbose:
                report.line(f"TLS certificate (temporary, self-signed): {fingerprint(der)}")
        _load_pem(ctx, temporary)
    if opts.ssl_verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if opts.ssl_trustfile:
            _load_trust(ctx, opts.ssl_trustfile)
        else:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return ctx, None if opts.ssl_cert else temporary


def _temporary_certificate(host: Optional[str]) -> tuple[bytes, bytes]:
    """Make a one-day self-signed certificate for this run: (PEM of the key
    and the certificate, the certificate's DER)."""
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
    pem = (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
           + cert.public_bytes(serialization.Encoding.PEM))
    return pem, cert.public_bytes(serialization.Encoding.DER)


def _load_pem(ctx: ssl.SSLContext, pem: bytes) -> None:
    """Load a key and certificate held in memory (through a private file:
    OpenSSL loads chains from files only)."""
    with tempfile.TemporaryDirectory(prefix="pync-tls-") as tmp:
        path = os.path.join(tmp, "cert.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_BINARY, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        ctx.load_cert_chain(path)


def handshake(sock: socket.socket, ctx: ssl.SSLContext, opts: Options,
              report: Reporter, server_side: bool,
              server_name: Optional[str] = None, received: bytes = b"") -> TlsSession:
    """Complete the handshake over sock (bounded by -w, else 30 s).

    ``received``: bytes already read from sock.  Checks --ssl-pin, prints
    what was agreed under -v, and turns every failure into one PyncError
    line.  (A loop of many connections drives it step by step instead:
    begin_handshake, TlsSession.advance_handshake, finish_handshake.)
    """
    tls = begin_handshake(sock, ctx, opts, server_side, server_name, received)
    deadline = time.monotonic() + (float(opts.wait) if opts.wait else HANDSHAKE_TIMEOUT)
    try:
        while True:
            wait = tls.advance_handshake()
            if not wait:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            wait_fd(tls.sock, wait, left)
    except (OSError, ssl.SSLError) as exc:
        raise handshake_failed(tls, exc) from None
    finish_handshake(tls, opts, report, server_side)
    return tls


def begin_handshake(sock: socket.socket, ctx: ssl.SSLContext, opts: Options,
                    server_side: bool, server_name: Optional[str] = None,
                    received: bytes = b"") -> TlsSession:
    """A TLS session over sock (made non-blocking), its handshake not begun."""
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
    return tls


def handshake_failed(tls: TlsSession, exc: BaseException) -> PyncError:
    """The one line for a failed handshake (telling the peer why, where
    OpenSSL has an alert for it)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        _send_alert(tls)
        return PyncError(f"TLS: certificate verify failed: {exc.verify_message}")
    if isinstance(exc, socket.timeout):
        return PyncError("TLS: handshake timed out")
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return PyncError("TLS: the peer closed the connection during the handshake")
    if isinstance(exc, ssl.SSLError):
        _send_alert(tls)
        return PyncError(f"TLS: handshake failed: {reason(exc)}")
    return PyncError(f"TLS: handshake failed: {strerror(exc)}")


def finish_handshake(tls: TlsSession, opts: Options, report: Reporter,
                     server_side: bool) -> None:
    """Check --ssl-pin and say under -v what was agreed."""
    der = tls.obj.getpeercert(binary_form=True)
    if opts.ssl_pin and not server_side:
        got = fingerprint(der) if der else "no certificate"
        if got != "sha256:" + opts.ssl_pin:
            raise PyncError(f"TLS: certificate does not match --ssl-pin (got {got})")
    if report.verbose:
        report.line(_describe(tls.obj, der))


def _send_alert(tls: TlsSession) -> None:
    """Tell the peer why the handshake failed (OpenSSL queued an alert)."""
    try:
        tls.flush_until(time.monotonic() + ALERT_WAIT)
    except OSError:
        pass


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



__all__ = ["TlsStream", "client_context", "fingerprint", "handshake", "server_context"]
