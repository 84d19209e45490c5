"""The Options a command line turns into, and the rules between flags.

``Options`` is frozen: once argv is parsed, nothing changes it, so every mode
reads the same settings.  Field names say what the flag means, with nc's
letter in the comment.
"""

from __future__ import annotations

from .record import Record
from .report import PyncError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


class Options(Record):
    """Everything the command line asked for."""

    family: int = 0                       # -4 / -6 (socket.AF_INET / AF_INET6; 0: either)
    unix: bool = False                    # -U
    udp: bool = False                     # -u
    dccp: bool = False                    # -Z
    listen: bool = False                  # -l
    keep_open: bool = False               # -k
    zero_io: bool = False                 # -z
    verbose: int = 0                      # -v, repeatable
    numeric: bool = False                 # -n
    no_stdin: bool = False                # -d
    shutdown_on_eof: bool = False         # -N (also implied by -q N>=0)
    crlf: bool = False                    # -C
    telnet: bool = False                  # -t
    fd_pass: bool = False                 # -F
    randomize: bool = False               # -r
    broadcast: bool = False               # -b
    sock_debug: bool = False              # -D
    md5sig: bool = False                  # -S
    recv_buf: Optional[int] = None        # -I
    send_buf: Optional[int] = None        # -O
    tos: Optional[int] = None             # -T
    ttl: Optional[int] = None             # -M
    min_ttl: Optional[int] = None         # -m
    interval: int = 0                     # -i seconds between lines
    quit_after_eof: Optional[int] = None  # -q; None (or negative) = never
    wait: Optional[int] = None            # -w seconds
    recv_limit: Optional[int] = None      # -W
    source_addr: Optional[str] = None     # -s
    source_port: Optional[str] = None     # -p
    proxy_type: Optional[str] = None      # -X
    proxy: Optional[str] = None           # -x
    proxy_user: Optional[str] = None      # -P
    host: Optional[str] = None            # destination, or listen address
    ports: tuple[int, ...] = ()
    unix_path: Optional[str] = None       # -U path
    udp_probe: Optional[bytes] = None     # --udp-probe DATA for -uz
    broker: bool = False                  # --broker
    chat: bool = False                    # --chat (implies --broker)
    allow: tuple[str, ...] = ()           # --allow, --allowfile entries
    deny: tuple[str, ...] = ()            # --deny, --denyfile entries
    max_conns: Optional[int] = None       # --max-conns
    send_only: bool = False               # --send-only
    recv_only: bool = False               # --recv-only
    exec_argv: Optional[tuple[str, ...]] = None  # -e PROG / -c CMD (as sh -c CMD)
    proxy_password: Optional[str] = None  # --proxy-auth user:PASS (else asked for)
    proxy_dns: Optional[str] = None       # --proxy-dns local|remote (default: as nc)
    output: Optional[str] = None          # -o FILE: raw dump of both directions
    hex_dump: Optional[str] = None        # --hex-dump FILE
    append_output: bool = False           # --append-output: append to the dump files
    ssl: bool = False                     # --ssl
    ssl_cert: Optional[str] = None        # --ssl-cert FILE (PEM)
    ssl_key: Optional[str] = None         # --ssl-key FILE (PEM)
    ssl_trustfile: Optional[str] = None   # --ssl-trustfile FILE: more trust anchors
    ssl_verify: bool = False              # --ssl-verify: (server) require client certs
    ssl_insecure: bool = False            # --ssl-insecure: no verification at all
    ssl_servername: Optional[str] = None  # --ssl-servername NAME (SNI and the name checked)
    ssl_alpn: Optional[str] = None        # --ssl-alpn p1,p2
    ssl_ciphers: Optional[str] = None     # --ssl-ciphers OpenSSL cipher list
    progress: Optional[str] = None        # --progress: "auto" (on a terminal) or "force"
    ssl_pin: Optional[str] = None         # --ssl-pin sha256:HEX (lower-case hex, no colons)
    forward: Optional[str] = None         # -L [addr:]port (or a socket path): forward to host port

    @property
    def proxy_server(self) -> bool:
        """-l with -X and no -x: pync is the proxy (HTTP, SOCKS5, SOCKS4)."""
        return self.listen and self.proxy_type is not None and self.proxy is None

    @property
    def serves_many(self) -> bool:
        """-L or the proxy server: many clients at once, each joined to a new
        connection, in one loop; no stdin or stdout."""
        return bool(self.forward) or self.proxy_server

    @property
    def brokering(self) -> bool:
        """--broker or --chat: many clients at once, relayed to each other."""
        return self.broker or self.chat

    @property
    def quits_after_eof(self) -> bool:
        """-q with a non-negative value: quit that many seconds after stdin ends."""
        return self.quit_after_eof is not None and self.quit_after_eof >= 0

    @property
    def half_close(self) -> bool:
        """Shut the socket's write side at stdin EOF (-N, or -q N >= 0)."""
        return self.shutdown_on_eof or self.quits_after_eof

    @property
    def proto_name(self) -> str:
        """The protocol word nc prints: tcp, udp or dccp."""
        if self.udp:
            return "udp"
        if self.dccp:
            return "dccp"
        return "tcp"

    @property
    def socktype(self) -> int:
        import socket

        if self.udp:
            return socket.SOCK_DGRAM
        if self.dccp:
            return SOCK_DCCP
        return socket.SOCK_STREAM


SOCK_DCCP = 6
IPPROTO_DCCP = 33


def check_rules(opts: Options) -> None:
    """Reject flag combinations nc rejects, with nc's words."""
    if opts.listen and opts.zero_io:
        raise PyncError("cannot use -z and -l")
    if opts.forward and opts.listen:
        raise PyncError("cannot use -L and -l")
    if opts.forward and opts.zero_io:
        raise PyncError("cannot use -L and -z")
    if opts.keep_open and not (opts.listen or opts.forward):
        raise PyncError("must use -l with -k")
    if opts.listen and opts.proxy:
        raise PyncError("no proxy support for listen")
    if opts.unix and (opts.proxy or opts.proxy_type):
        raise PyncError("no proxy support for unix sockets")
    if opts.proxy and opts.udp:
        raise PyncError("no proxy support for UDP mode")
    if opts.proxy and opts.source_addr:
        raise PyncError("no proxy support for local source address")
    if opts.fd_pass and opts.unix and not opts.listen:
        raise PyncError("cannot use -F and -U")
    if opts.brokering and not opts.listen:
        raise PyncError("--broker and --chat need -l")
    if opts.brokering and opts.udp:
        raise PyncError("cannot use --broker or --chat with -u")
    if opts.send_only and opts.recv_only:
        raise PyncError("cannot use --send-only and --recv-only")
    if opts.serves_many:
        _check_serving_rules(opts)
    _check_power_rules(opts)


# What the forwarder and the proxy server do not do: they join two
# connections and never look at the bytes, nor at stdin and stdout.
_NOT_SERVING = (("exec_argv", "-e/-c"), ("brokering", "--broker or --chat"), ("fd_pass", "-F"),
                ("crlf", "-C"), ("telnet", "-t"), ("interval", "-i"), ("recv_limit", "-W"),
                ("output", "-o"), ("hex_dump", "--hex-dump"), ("send_only", "--send-only"),
                ("recv_only", "--recv-only"), ("progress", "--progress"),
                # they have no stdin (half-closes are carried through anyway)
                ("no_stdin", "-d"), ("shutdown_on_eof", "-N"), ("quits_after_eof", "-q"),
                ("randomize", "-r"))


def _check_serving_rules(opts: Options) -> None:
    """-L and the proxy server (-l -X): what they cannot be combined with."""
    what = "-L" if opts.forward else "a proxy server (-l -X)"
    for field, flag in _NOT_SERVING:
        if getattr(opts, field) not in (None, False, 0):
            raise PyncError(f"cannot use {flag} with {what}")
    if opts.forward and opts.source_port:
        raise PyncError("cannot use -p with -L: every client needs a source port of its own")
    if opts.forward and not opts.proxy and (opts.proxy_type or opts.proxy_user):
        raise PyncError("-X, -P and --proxy-auth go with -x with -L "
                        "(a proxy server is -l -X)")
    if opts.forward and opts.udp and opts.unix:
        raise PyncError("cannot use -U with -L -u: datagrams go to a host and port")
    if opts.proxy_server:
        if opts.udp:
            raise PyncError("a proxy server (-l -X) speaks TCP: not with -u")
        if opts.proxy_user is not None and opts.proxy_type == "4":
            raise PyncError("SOCKS4 carries no password: a proxy server that asks for one "
                            "(-P, --proxy-auth) needs -X 5 or -X connect")


def _check_power_rules(opts: Options) -> None:
    """Exec, TLS, dumps and -F: the modes each one cannot serve."""
    if opts.exec_argv:
        if opts.zero_io:
            raise PyncError("cannot use -e/-c with -z")
        if opts.brokering:
            raise PyncError("cannot use -e/-c with --broker or --chat")
        if opts.fd_pass and not opts.listen:
            raise PyncError("cannot use -e/-c with -F")
    if opts.ssl:
        if opts.udp:
            raise PyncError("cannot use --ssl with -u")
        if opts.zero_io:
            raise PyncError("cannot use --ssl with -z")
        if opts.brokering:
            raise PyncError("cannot use --ssl with --broker or --chat")
        if opts.fd_pass and not opts.listen:
            raise PyncError("cannot use --ssl with -F")
        if (opts.listen or opts.forward) and (opts.ssl_pin or opts.ssl_servername):
            raise PyncError("--ssl-pin and --ssl-servername check a server: not with -l or -L")
        if opts.ssl_key and not opts.ssl_cert:
            raise PyncError("--ssl-key needs --ssl-cert")
    if opts.output or opts.hex_dump:
        if opts.zero_io:
            raise PyncError("cannot use -o/--hex-dump with -z")
        if opts.brokering:
            raise PyncError("cannot use -o/--hex-dump with --broker or --chat")
