"""Client mode: connect to each port given, and relay stdio over it (or pass it on, with -F).

As nc: every address getaddrinfo returns is tried in order until one
connects (failures are reported under -v), ``-s``/``-p`` bind the local end,
``-w`` bounds each connect, and with several ports each is connected and
relayed in turn.  Exit 0 if any connection succeeded.

With ``-x`` the connection goes through a proxy (``-X 4``, ``5`` — the
default — or ``connect``): pync connects to the proxy, runs the handshake
from proxy.py, and the bytes that followed the proxy's reply are the first
the session delivers.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile

from ..base.options import IPPROTO_DCCP, Options
from ..base.report import PyncError, Reporter, errno_text, strerror
from ..net import sockopts
from ..net.addr import numeric_host, resolve, service_name, split_host_port, unix_address
from ..net.sockopts import new_socket
from ..net.unixsock import SocketFile, bind_unix
from ..platform import EVENT_WRITE, backend
from ..platform.base import AF_UNIX, CONNECT_IN_PROGRESS
from .session import SessionKit, relay_session

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


def run_connect(opts: Options, kit: SessionKit, report: Reporter) -> int:
    """Connect mode; returns the exit status."""
    if opts.unix:
        return _connect_unix(opts, kit, report)
    md5_key = sockopts.read_md5_password() if opts.md5sig else None
    ports = list(opts.ports)
    if opts.randomize:
        random.shuffle(ports)
    status = 1
    failed = False
    assert opts.host is not None
    proxy = Proxy(opts) if opts.proxy else None
    for port in ports:
        leftover = b""
        if proxy is not None:
            opened = proxy.connect(opts.host, port, report, md5_key)
            if opened is None:
                continue
            sock, leftover = opened
            ip = opts.host  # nc names the destination as given: the proxy resolved it
        else:
            direct = open_connection(opts, opts.host, port, report, md5_key)
            if direct is None:
                continue
            sock, ip = direct
        status = 0
        report.connect_succeeded(opts.host, ip, port, opts.proto_name,
                                 service_name(port, opts.proto_name, opts.numeric))
        if opts.fd_pass:
            return pass_socket(sock, kit)
        label = f"{ip} port {port} ({opts.proto_name})"
        if relay_session(sock, label, kit, opts, report, server_name=opts.host,
                         first_data=leftover):
            failed = True
    return 1 if failed else status


def pass_socket(sock: socket.socket, kit: SessionKit) -> int:
    """-F: send the connected socket over stdout (SCM_RIGHTS) and exit 0, as nc."""
    out_fd = kit.stdio.sink_fd
    try:
        if out_fd is None:
            raise PyncError("sendmsg: Bad file descriptor")
        if os.isatty(out_fd):
            raise PyncError("Cannot pass file descriptor to tty")
        try:
            out = socket.socket(fileno=os.dup(out_fd))
        except OSError as exc:
            raise PyncError(f"sendmsg: {strerror(exc)}") from None
        try:
            out.setblocking(True)
            backend().send_fd(out, sock.fileno())
        except OSError as exc:
            raise PyncError(f"sendmsg: {strerror(exc)}") from None
        finally:
            out.close()
    finally:
        sock.close()
    return 0


class Proxy:
    """-x/-X/-P: reach each destination through one proxy."""

    def __init__(self, opts: Options) -> None:
        from ..protocols.proxy import HTTP_PROXY_PORT, SOCKS_PORT

        assert opts.proxy is not None
        self.opts = opts
        self.kind = opts.proxy_type or "5"  # nc's default: SOCKS5
        default = HTTP_PROXY_PORT if self.kind == "connect" else SOCKS_PORT
        self.host, self.port = split_host_port(opts.proxy, default)
        self.password = opts.proxy_password
        self.asked = False  # the password came from the terminal
        if opts.proxy_user is not None and self.password is None:
            self.password = os.environ.get("PYNC_PROXY_PASSWORD")
            if self.password is None and self.kind == "5":
                self.password = self._ask_password()
            # SOCKS4 sends no password (the user is its user id); HTTP
            # CONNECT, as nc, tries without credentials and asks only if
            # the proxy answers 407.

    def _ask_password(self) -> str:
        self.asked = True
        return backend().ask_secret(f"Proxy password for {self.opts.proxy_user}@{self.host}: ",
                          "Unable to read proxy passphrase")

    def connect(self, host: str, port: int, report: Reporter,
                md5_key: Optional[bytes]) -> Optional[tuple[socket.socket, bytes]]:
        """A socket tunnelled to host:port and the tunnel's first bytes;
        None if the proxy itself could not be reached (reported under -v).

        As nc: when an HTTP proxy refuses a password typed on the terminal
        (407), say ``Proxy authentication failed`` (no ``pync:``), ask again
        and reconnect; the third refusal ends with ``Too many authentication
        failures``.  A password from --proxy-auth or the environment is not
        asked again: its refusal is the error.
        """
        from ..protocols.proxy import ProxyAuthError

        refusals = 0
        while True:
            try:
                return self._connect_once(host, port, report, md5_key)
            except ProxyAuthError as exc:
                if self.password is None:  # the first try, without credentials
                    self.password = self._ask_password()
                    continue
                if not self.asked:
                    raise PyncError(str(exc)) from None
                report.line(str(exc))
                refusals += 1
                if refusals >= 3:
                    raise PyncError("Too many authentication failures") from None
                self.password = self._ask_password()

    def _connect_once(self, host: str, port: int, report: Reporter,
                      md5_key: Optional[bytes]) -> Optional[tuple[socket.socket, bytes]]:
        from ..protocols.proxy import ProxyAuthError, ProxyError, new_handshake

        opened = open_connection(self.opts, self.host, self.port, report, md5_key)
        if opened is None:
            return None
        sock = opened[0]
        try:
            shake = new_handshake(self.kind, self._destination(host, port), port,
                                  self.opts.proxy_user, self.password)
            sock.sendall(shake.start())
            while not shake.done:
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    raise PyncError("proxy handshake timed out") from None
                except OSError as exc:
                    shake.eof(strerror(exc))
                    raise  # eof() always raises; for the type checker
                if not data:
                    shake.eof()
                reply = shake.feed(data)
                if reply:
                    sock.sendall(reply)
        except ProxyAuthError:
            sock.close()
            raise
        except ProxyError as exc:
            sock.close()
            raise PyncError(str(exc)) from None
        except BaseException:
            sock.close()
            raise
        return sock, shake.leftover

    def _destination(self, host: str, port: int) -> str:
        """The name the proxy is given, or the address pync resolved for it.

        As nc: SOCKS4 resolves here (SOCKS4a, with --proxy-dns remote, lets
        the proxy do it); SOCKS5 and HTTP CONNECT pass the name on
        (--proxy-dns local resolves here).
        """
        dns = self.opts.proxy_dns or ("local" if self.kind == "4" else "remote")
        if dns == "remote":
            return host
        family = socket.AF_INET if self.kind == "4" else self.opts.family
        info = resolve(host, port, family, socket.SOCK_STREAM, self.opts.numeric)
        return numeric_host(info[0][4])


def connect_bounded(sock: socket.socket, sockaddr: object, timeout: Optional[float]) -> None:
    """connect(), bounded by timeout (None: as long as the system tries),
    waiting in the platform's wait, which ^C ends everywhere (a blocking
    connect() on Windows is deaf to it).  The socket is then left as a
    settimeout(timeout) socket, as the proxy handshakes expect."""
    sock.setblocking(False)
    err = sock.connect_ex(sockaddr)  # type: ignore[arg-type]
    if err in CONNECT_IN_PROGRESS:
        if not backend().wait_fd(sock.fileno(), EVENT_WRITE, timeout):
            raise socket.timeout("timed out")
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, errno_text(err))
    sock.settimeout(timeout)


def open_connection(opts: Options, host: str, port: int, report: Reporter,
                    md5_key: Optional[bytes] = None
                    ) -> Optional[tuple[socket.socket, str]]:
    """Try each address of host:port; the connected socket and its address.

    None when every address failed (each failure reported under -v).
    """
    for family, socktype, proto, _, sockaddr in resolve(
            host, port, opts.family, opts.socktype, opts.numeric):
        ip = numeric_host(sockaddr)
        sock = new_socket(family, socktype, IPPROTO_DCCP if opts.dccp else proto)
        try:
            sockopts.bind_source(sock, opts, family)
            sockopts.apply(sock, family, opts, md5_key)
            connect_bounded(sock, sockaddr, opts.wait if opts.wait else None)
        except PyncError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            report.connect_failed(host, ip, port, opts.proto_name, exc)
            continue
        return sock, ip
    return None



def _connect_unix(opts: Options, kit: SessionKit, report: Reporter) -> int:
    """-U path: connect to a UNIX-domain socket (``@name``: abstract).

    With -u the socket is a datagram one, and it needs an address of its own
    for replies: -s path, or a fresh socket in a private temp directory.
    """
    assert opts.unix_path is not None
    socktype = socket.SOCK_DGRAM if opts.udp else socket.SOCK_STREAM
    assert AF_UNIX is not None  # -U was refused where there is none
    sock = socket.socket(AF_UNIX, socktype)
    own: Optional[SocketFile] = None
    try:
        if opts.udp:
            if opts.source_addr:
                own = bind_unix(sock, opts.source_addr)
            else:
                tmp = tempfile.mkdtemp(prefix="pync-")
                try:
                    own = bind_unix(sock, os.path.join(tmp, "recv.sock"))
                except PyncError:
                    os.rmdir(tmp)
                    raise
                if own:
                    own.remove_dir = True
        sock.settimeout(opts.wait if opts.wait else None)
        sock.connect(unix_address(opts.unix_path))
    except (OSError, ValueError) as exc:
        sock.close()
        if own:
            own.remove()
        raise PyncError(f"{opts.unix_path}: {strerror(exc)}") from None
    except PyncError:
        sock.close()
        raise
    try:
        if opts.fd_pass:
            return pass_socket(sock, kit)
        return relay_session(sock, opts.unix_path, kit, opts, report)
    finally:
        if own:
            own.remove()
