"""Every message pync prints on stderr, in OpenBSD nc's wording.

nc's messages are part of its interface: scripts grep for
``succeeded!`` and users know ``port number invalid``.  Keeping them all
here means one place to compare against ``nc`` and one place to reword.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Optional

PROG = "pync"

USAGE = (
    "usage: pync [-46CDdFhklNnrStUuvZz] [-I length] [-i interval] [-M ttl]\n"
    "\t  [-m minttl] [-O length] [-P proxy_username] [-p source_port]\n"
    "\t  [-q seconds] [-s sourceaddr] [-T keyword] [-V rtable] [-W recvlimit]\n"
    "\t  [-w timeout] [-X proxy_protocol] [-x proxy_address[:port]]\n"
    "\t  [destination] [port]\n"
)

HELP_SUMMARY = """\
	Command Summary:
		-4		Use IPv4 (--ipv4)
		-6		Use IPv6 (--ipv6)
		-b		Allow broadcast (--broadcast)
		-C		Send CRLF as line-ending (--crlf)
		-c cmd		Run cmd with /bin/sh -c for each connection (--sh-exec)
		-D		Enable the debug socket option (--debug)
		-d		Detach from stdin (--no-stdin)
		-e prog		Run prog (no shell) for each connection (--exec)
		-F		Pass socket fd (--fd-pass)
		-h		This help text (--help)
		-I length	TCP receive buffer length (--recv-buf)
		-i interval	Delay interval for lines sent, ports scanned (--interval, --delay)
		-k		Keep inbound sockets open for multiple connects (--keep-open)
		-L [addr:]port	Forward: listen there, join each client to
				destination port, many at once (--local)
		-l		Listen mode, for inbound connects (--listen)
		-M ttl		Outgoing TTL / Hop Limit (--ttl)
		-m minttl	Minimum incoming TTL / Hop Limit (--min-ttl)
		-N		Shutdown the network socket after EOF on stdin (--shutdown)
		-n		Suppress name/port resolutions (--nodns)
		-O length	TCP send buffer length (--send-buf)
		-o file		Record both directions, raw, in file (--output)
		-P proxyuser	Username for proxy authentication (--proxy-user)
		-p port		Specify local port for remote connects (--source-port)
		-q secs		quit after EOF on stdin and delay of secs (--quit)
		-r		Randomize remote ports (--randomize)
		-S		Enable the TCP MD5 signature option (--md5sig)
		-s sourceaddr	Local source address (--source)
		-T keyword	TOS value (--tos)
		-t		Answer TELNET negotiation (--telnet)
		-U		Use UNIX domain socket (--unixsock)
		-u		UDP mode (--udp)
		-V rtable	Specify alternate routing table (--rtable)
		-v		Verbose (--verbose)
		-W recvlimit	Terminate after receiving a number of packets (--recv-limit)
		-w timeout	Timeout for connects and final net reads (--wait)
		-X proto	Proxy protocol: "4", "5" (SOCKS) or "connect" (--proxy-type);
				with -l and no -x: be that proxy (HTTP, SOCKS)
		-x addr[:port]	Specify proxy address and port (--proxy)
		-Z		DCCP mode (--dccp)
		-z		Zero-I/O mode [used for scanning] (--zero)
		--udp-probe data	Datagram sent to each port by -uz (default: empty)
		--broker	With -l: many clients, each one's bytes to all others
		--chat		With -l: a chat room (names, /nick, escaped controls)
		--allow hosts	Accept only these addresses, CIDR blocks, names
		--allowfile f	The same, from a file (one entry a line)
		--deny hosts	Refuse these addresses, CIDR blocks, names
		--denyfile f	The same, from a file (one entry a line)
		--max-conns n	Clients at once: --broker/--chat, -L, -l -X, -l -k -e (100)
		--send-only	Only send: ignore what the network sends
		--recv-only	Only receive: never read stdin
		--hex-dump file	Record both directions as a hex dump in file
		--append-output	Append to the -o/--hex-dump files, not truncate
		--proxy-auth u[:p]	Proxy user (and password: better from the
				environment, PYNC_PROXY_PASSWORD, or the prompt);
				with -l -X: what clients must give
		--proxy-dns how	local or remote: who resolves the destination
		--ssl		Use TLS (verifies the server by default)
		--ssl-cert file	Certificate (PEM): the server's, or a client's
		--ssl-key file	Private key (PEM) for --ssl-cert
		--ssl-trustfile f	More trust anchors (PEM) to verify the peer
		--ssl-verify	With -l: require and verify client certificates
		--ssl-insecure	Do not verify the server (says so on stderr)
		--ssl-servername n	Name sent (SNI) and verified (default: host)
		--ssl-alpn list	ALPN protocols, comma-separated
		--ssl-ciphers l	OpenSSL cipher list
		--ssl-pin sha256:hex	Accept exactly the certificate with this hash
		--progress[=force]	A transfer meter on stderr (a terminal, or forced)
		--version	Print the version and exit
	Port numbers can be individual or ranges: lo-hi [inclusive]
"""


class PyncError(Exception):
    """A fatal error: ``pync: <message>`` on stderr and exit 1.

    ``show_usage`` appends the usage text, as nc does after getopt errors.
    """

    def __init__(self, message: str, show_usage: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.show_usage = show_usage


class UsageError(PyncError):
    """Bad command line with no message of its own: nc prints just the usage."""

    def __init__(self) -> None:
        super().__init__("", show_usage=True)


# Windows' socket errors (WSAE*, which Python reports as their errno) in the
# words of the C library nc uses: its own strerror() knows none of them.
_WSA_TEXT = {
    10004: "Interrupted system call", 10013: "Permission denied",
    10022: "Invalid argument", 10024: "Too many open files",
    10035: "Resource temporarily unavailable", 10036: "Operation now in progress",
    10040: "Message too long", 10048: "Address already in use",
    10049: "Cannot assign requested address", 10050: "Network is down",
    10051: "Network is unreachable", 10052: "Network dropped connection on reset",
    10053: "Software caused connection abort", 10054: "Connection reset by peer",
    10055: "No buffer space available", 10057: "Transport endpoint is not connected",
    10060: "Connection timed out", 10061: "Connection refused",
    10064: "Host is down", 10065: "No route to host",
}


def errno_text(code: int) -> str:
    """os.strerror(code), in the C library's words also for Windows' socket errors."""
    text = os.strerror(code)
    if code in _WSA_TEXT and text.startswith("Unknown error"):
        return _WSA_TEXT[code]
    return text


def strerror(exc: BaseException) -> str:
    """The C library's text for an OSError (what nc's err() prints).

    A ValueError (a NUL byte in a path or name) reads as EINVAL's text.
    """
    if isinstance(exc, ValueError):
        return os.strerror(22)
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno_text(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def gai_strerror(exc: BaseException) -> str:
    """The text of a getaddrinfo failure, as glibc's gai_strerror words it."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def write_all(fd: int, data: bytes) -> None:
    """Blocking write of everything to fd; a closed reader is ignored (EPIPE)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass


class Reporter:
    """Writes nc's messages to one stderr stream, at a verbosity level."""

    def __init__(self, stream: IO[str], verbose: int = 0) -> None:
        self.stream = stream
        self.verbose = verbose

    # -- low level -------------------------------------------------------
    def line(self, text: str) -> None:
        """Print one line as it is (nc's -v notices carry no prefix)."""
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr gone: nothing left to tell anyone

    def warn(self, text: str) -> None:
        """``pync: text`` — nc's warn()/warnx()."""
        self.line(f"{PROG}: {text}")

    def error(self, err: PyncError) -> None:
        """Print a fatal error, with the usage text when nc would show it."""
        if err.message:
            self.warn(err.message)
        if err.show_usage:
            self.usage()

    def usage(self) -> None:
        try:
            self.stream.write(USAGE)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    # -- connect ---------------------------------------------------------
    def connect_failed(self, host: str, ip: str, port: int, proto: str,
                       exc: BaseException) -> None:
        """``connect to H (IP) port P (tcp) failed: reason`` under -v."""
        if not self.verbose:
            return
        import socket

        if isinstance(exc, socket.timeout) and exc.errno is None:
            # our own -w deadline, not the kernel's ETIMEDOUT: nc's words
            what = "timed out: Operation now in progress"
        else:
            what = "failed: " + strerror(exc)
        self.warn(f"connect to {_host_ip(host, ip)} port {port} ({proto}) {what}")

    def connect_succeeded(self, host: str, ip: str, port: int, proto: str,
                          service: str) -> None:
        """``Connection to H (IP) P port [tcp/svc] succeeded!`` under -v."""
        if self.verbose:
            self.line(f"Connection to {_host_ip(host, ip)} {port} port "
                      f"[{proto}/{service}] succeeded!")

    # -- listen ----------------------------------------------------------
    def bound(self, where: str) -> None:
        if self.verbose:
            self.line(f"Bound on {where}")

    def listening(self, where: str) -> None:
        if self.verbose:
            self.line(f"Listening on {where}")

    def received(self, where: str) -> None:
        if self.verbose:
            self.line(f"Connection received on {where}")

    def denied(self, why: str) -> None:
        """A peer refused by --allow/--deny or --max-conns, under -v."""
        if self.verbose:
            self.warn(f"new connection denied: {why}")

    # -- forwarder and proxy server ---------------------------------------
    def client_failed(self, where: str, why: str) -> None:
        """A client that was dropped before its tunnel opened, under -v."""
        if self.verbose:
            self.warn(f"{where}: {why}")

    def pair_ended(self, where: str, why: str, sent: int, received: int,
                   seconds: Optional[float]) -> None:
        """``Connection from H P closed`` (or reset, timed out) under -v;
        the bytes each way under -vv."""
        if self.verbose:
            self.line(f"Connection from {where} {why}")
        if self.verbose >= 2:
            took = f" in {seconds:.2f} seconds" if seconds is not None else ""
            self.warn(f"{where}: {sent} bytes forwarded, {received} bytes returned{took}")

    # -- relay -----------------------------------------------------------
    def summary(self, sent: int, received: int, seconds: float) -> None:
        """-vv: ncat's closing line for a session."""
        if self.verbose >= 2:
            self.warn(f"{sent} bytes sent, {received} bytes received in {seconds:.2f} seconds")

    def net_error(self, what: str, exc: Optional[BaseException], level: int = 2) -> None:
        """A reset or failed network read/write: under -vv (nc 1.219 says
        nothing of a TCP reset, even with -v); ``level`` 1 for datagrams,
        whose refusal nc's -v probe reports."""
        if self.verbose >= level and exc is not None:
            self.warn(f"{what}: {strerror(exc)}")


def _host_ip(host: str, ip: str) -> str:
    """nc shows ``host (ip)`` when the name given is not the address itself."""
    return host if host == ip else f"{host} ({ip})"
