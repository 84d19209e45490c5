"""argv -> Options, with nc's getopt behaviour and nc's error messages.

Short flags are OpenBSD nc's (Debian 1.219), parsed with GNU-style
permutation as glibc's getopt does for nc on Linux, so ``pync host 80 -v``
works.  Each value is checked when it is parsed, in the order given, with
nc's words (``timeout invalid: abc``); then the positional arguments and the
rules between flags.  Long names are aliases (ncat's name where ncat has one).
"""

from __future__ import annotations

import os

from .. import __version__
from ..base.numbers import strtonum
from ..base.options import Options, check_rules
from ..base.record import replace
from ..base.report import HELP_SUMMARY, USAGE, PyncError, UsageError
from .gnuopt import OptionError, gnu_getopt

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

SHORT = "46bCc:Dde:FhI:i:kL:lM:m:NnO:o:P:p:q:rSs:T:tUuV:vW:w:X:x:Zz"

# long name -> short letter; a trailing "=" marks options that take a value.
LONG: dict[str, str] = {
    "ipv4": "4", "ipv6": "6", "broadcast": "b", "crlf": "C", "debug": "D",
    "no-stdin": "d", "fd-pass": "F", "help": "h", "recv-buf=": "I",
    "interval=": "i", "delay=": "i", "keep-open": "k", "listen": "l",
    "ttl=": "M", "min-ttl=": "m", "shutdown": "N", "nodns": "n",
    "send-buf=": "O", "proxy-user=": "P", "source-port=": "p",
    "quit=": "q", "randomize": "r", "md5sig": "S", "source=": "s",
    "tos=": "T", "telnet": "t", "unixsock": "U", "udp": "u",
    "rtable=": "V", "verbose": "v", "recv-limit=": "W", "wait=": "w",
    "proxy-type=": "X", "proxy=": "x", "dccp": "Z", "zero": "z",
    # ncat's letters and names for what OpenBSD nc lacks (-L: pwncat's):
    "exec=": "e", "sh-exec=": "c", "output=": "o", "local=": "L",
    # long options of pync's own (ncat's names), without a short letter:
    "version": "", "udp-probe=": "", "broker": "", "chat": "", "allow=": "",
    "allowfile=": "", "deny=": "", "denyfile=": "", "max-conns=": "",
    "send-only": "", "recv-only": "", "hex-dump=": "", "append-output": "",
    "proxy-auth=": "", "proxy-dns=": "",
    "ssl": "", "ssl-cert=": "", "ssl-key=": "", "ssl-trustfile=": "",
    "ssl-verify": "", "ssl-insecure": "", "ssl-servername=": "",
    "ssl-alpn=": "", "ssl-ciphers=": "", "ssl-pin=": "", "progress?": "",
}

# -X values, with ncat's --proxy-type names as aliases.
PROXY_TYPES = {"4": "4", "5": "5", "connect": "connect", "socks4": "4",
               "socks4a": "4", "socks5": "5", "http": "connect"}

INT_MAX = 2**31 - 1
UINT_MAX = 2**32 - 1

# DiffServ code points and the old TOS names nc accepts for -T.
TOS_KEYWORDS = {
    "af11": 0x28, "af12": 0x30, "af13": 0x38, "af21": 0x48, "af22": 0x50,
    "af23": 0x58, "af31": 0x68, "af32": 0x70, "af33": 0x78, "af41": 0x88,
    "af42": 0x90, "af43": 0x98, "critical": 0xa0, "cs0": 0x00, "cs1": 0x20,
    "cs2": 0x40, "cs3": 0x60, "cs4": 0x80, "cs5": 0xa0, "cs6": 0xc0,
    "cs7": 0xe0, "ef": 0xb8, "inetcontrol": 0xc0, "lowcost": 0x02,
    "lowdelay": 0x10, "netcontrol": 0xe0, "reliability": 0x04,
    "throughput": 0x08,
}


class InfoRequest(Exception):
    """-h or --version: print ``text`` on stdout and exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def help_text() -> str:
    return f"pync {__version__} (OpenBSD netcat 1.219 compatible)\n" + USAGE + HELP_SUMMARY


def _number(text: str, low: int, high: int, what: str) -> int:
    """strtonum with nc's ``<what> <error>: <text>`` message."""
    try:
        return strtonum(text, low, high)
    except ValueError as exc:
        raise PyncError(f"{what} {exc}: {text}") from None


def parse_tos(text: str) -> int:
    """-T: a keyword, 0xHEX or a decimal 0..255 (nc's process_tos_opt)."""
    if text in TOS_KEYWORDS:
        return TOS_KEYWORDS[text]
    try:
        if len(text) > 1 and text.startswith("0x"):
            value = int(text[2:], 16)
        else:
            value = strtonum(text, 0, 255)
    except ValueError:
        raise PyncError(f"illegal tos value {text}") from None
    if not 0 <= value <= 255:
        raise PyncError(f"illegal tos value {text}")
    return value


def _short_of(opt: str) -> str:
    """The nc letter for an option as getopt returned it (``-v`` or ``--verbose``)."""
    if not opt.startswith("--"):
        return opt[1]
    name = opt[2:]
    return LONG.get(name, LONG.get(name + "=", ""))


def parse(argv: list[str]) -> Options:
    """Turn argv (without the program name) into Options, or raise.

    Raises PyncError (exit 1) for bad input and InfoRequest for -h/--version.
    """
    try:
        pairs, args = gnu_getopt(argv, SHORT, list(LONG))
    except OptionError as exc:
        raise PyncError(str(exc), show_usage=True) from None

    kw: dict[str, object] = {}
    lists: dict[str, list[str]] = {"allow": [], "allowfile": [], "deny": [], "denyfile": []}
    verbose = 0
    for opt, val in pairs:
        if opt == "--version":
            raise InfoRequest(f"pync {__version__}\n")
        if opt in _LONG_ONLY:
            _long_only(opt, val, kw, lists)
            continue
        letter = _short_of(opt)
        if letter == "h":
            raise InfoRequest(help_text())
        if letter == "v":
            verbose += 1
        elif letter in _FLAGS:
            kw[_FLAGS[letter]] = True
        elif letter in "46":
            import socket

            kw["family"] = socket.AF_INET if letter == "4" else socket.AF_INET6
        else:
            _value_option(letter, val, kw)
    kw["verbose"] = verbose
    if any(lists.values()):
        from ..modes.access import read_entries

        kw["allow"] = tuple(read_entries(lists["allow"], lists["allowfile"]))
        kw["deny"] = tuple(read_entries(lists["deny"], lists["denyfile"]))

    _positional(args, kw)
    opts = Options(**kw)  # type: ignore[arg-type]
    check_rules(opts)
    _check_platform(opts)
    return _with_ports(opts, args)


# Flags a platform may lack, and the feature of platform.base.Backend each needs.
_PLATFORM_FEATURES = (("unix", "U", "unix_sockets"), ("fd_pass", "F", "fd_passing"),
                      ("md5sig", "S", "md5sig"), ("tos", "T", "tos"),
                      ("min_ttl", "m", "min_ttl"))


def _check_platform(opts: Options) -> None:
    """``pync: -U is not available on this platform`` where it is not."""
    asked = [(letter, feature) for field, letter, feature in _PLATFORM_FEATURES
             if getattr(opts, field) not in (None, False)]
    if not asked and not (opts.unix_path or "").startswith("@"):
        return  # the backend is not even loaded (pync -h stays quick)
    from ..platform import backend

    plat = backend()
    for letter, feature in asked:
        if not getattr(plat, feature):
            raise PyncError(f"-{letter} is not available on this platform")
    if opts.unix and (opts.unix_path or "").startswith("@") and not plat.abstract_unix:
        raise PyncError("abstract UNIX sockets (@name) are not available on this platform")


_LONG_ONLY = {"--" + name.rstrip("=?") for name, letter in LONG.items()
              if not letter and name != "version"}


def _long_only(opt: str, val: str, kw: dict[str, object], lists: dict[str, list[str]]) -> None:
    """Options with a long name only (ncat's): broker, chat, access control, ..."""
    name = opt[2:]
    if name in lists:
        lists[name].append(val)
    elif name == "udp-probe":
        kw["udp_probe"] = os.fsencode(val)
    elif name == "max-conns":
        kw["max_conns"] = _number(val, 1, INT_MAX, "max-conns")
    elif name == "proxy-auth":
        user, sep, password = val.partition(":")
        kw["proxy_user"] = user
        if sep:
            kw["proxy_password"] = password
    elif name == "proxy-dns":
        if val not in ("local", "remote"):
            raise PyncError(f"--proxy-dns must be local or remote: {val}")
        kw["proxy_dns"] = val
    elif name.startswith("ssl"):
        value: object = val if name + "=" in LONG else True
        kw[name.replace("-", "_")] = parse_pin(val) if name == "ssl-pin" else value
        kw["ssl"] = True  # every --ssl-* option asks for TLS
    elif name == "hex-dump":
        kw["hex_dump"] = val
    elif name == "progress":
        if val not in ("", "force"):
            raise PyncError(f"--progress takes no value but force: {val}")
        kw["progress"] = val or "auto"
    else:  # broker, chat, send-only, recv-only, append-output
        kw[name.replace("-", "_")] = True


def parse_pin(text: str) -> str:
    """--ssl-pin sha256:HEX (colons allowed, any case) -> 64 lower-case hex digits."""
    kind, _, digest = text.partition(":")
    digest = digest.replace(":", "").lower()
    if (kind.lower() != "sha256" or len(digest) != 64
            or any(c not in "0123456789abcdef" for c in digest)):
        raise PyncError(f"--ssl-pin must be sha256: and 64 hex digits: {text}")
    return digest


_FLAGS = {
    "b": "broadcast", "C": "crlf", "D": "sock_debug", "d": "no_stdin",
    "F": "fd_pass", "k": "keep_open", "l": "listen", "N": "shutdown_on_eof",
    "n": "numeric", "r": "randomize", "S": "md5sig", "t": "telnet",
    "U": "unix", "u": "udp", "Z": "dccp", "z": "zero_io",
}


def _value_option(letter: str, val: str, kw: dict[str, object]) -> None:
    """Check one option's value as nc does while it runs getopt."""
    if letter == "I":
        kw["recv_buf"] = _number(val, 1, 65536 << 14, "TCP receive window")
    elif letter == "O":
        kw["send_buf"] = _number(val, 1, 65536 << 14, "TCP send window")
    elif letter == "i":
        kw["interval"] = _number(val, 0, UINT_MAX, "interval")
    elif letter == "M":
        kw["ttl"] = _ttl(val, "ttl")
    elif letter == "m":
        kw["min_ttl"] = _ttl(val, "minttl")
    elif letter == "q":
        kw["quit_after_eof"] = _number(val, -INT_MAX - 1, INT_MAX, "quit timer")
    elif letter == "W":
        kw["recv_limit"] = _number(val, 1, INT_MAX, "receive limit")
    elif letter == "w":
        wait = _number(val, 0, INT_MAX // 1000, "timeout")
        kw["wait"] = wait or None
    elif letter == "T":
        kw["tos"] = parse_tos(val)
    elif letter == "X":
        if val.lower() not in PROXY_TYPES:
            raise PyncError("unsupported proxy protocol")
        kw["proxy_type"] = PROXY_TYPES[val.lower()]
        if val.lower() == "socks4a":  # ncat's name: the proxy resolves
            kw.setdefault("proxy_dns", "remote")
    elif letter == "V":
        raise PyncError("no alternate routing table support available")
    elif letter == "x":
        kw["proxy"] = val
    elif letter == "P":
        kw["proxy_user"] = val
    elif letter == "p":
        kw["source_port"] = val
    elif letter == "s":
        kw["source_addr"] = val
    elif letter == "e":
        kw["exec_argv"] = _split_command(val)
    elif letter == "c":
        from ..platform import backend
        kw["exec_argv"] = backend().shell_argv(val)
    elif letter == "o":
        kw["output"] = val
    elif letter == "L":
        from ..net.addr import is_socket_path, split_local
        if not is_socket_path(val):
            split_local(val)  # nc-style words for a bad port, now
        kw["forward"] = val


def _split_command(text: str) -> tuple[str, ...]:
    """-e PROG [ARGS]: split as a shell would, but never run a shell."""
    import shlex  # only -e needs it

    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise PyncError(f"-e: {exc}: {text}") from None
    if not argv:
        raise PyncError("-e: empty command")
    return argv


def _ttl(val: str, what: str) -> int:
    try:
        return strtonum(val, 0, 255)
    except ValueError as exc:
        raise PyncError(f"{what} is {exc}") from None


def _positional(args: list[str], kw: dict[str, object]) -> None:
    """Where the destination, port or socket path comes from (nc's rules)."""
    listen = bool(kw.get("listen"))
    if kw.get("unix"):
        if not args:
            if listen:
                raise PyncError("missing socket pathname")
            raise UsageError()
        if len(args) > 1:
            raise PyncError("cannot use port with -U")
        if listen and (kw.get("source_port") or kw.get("source_addr")):
            raise UsageError()
        kw["unix_path"] = args[0]
        return
    if not args:
        if not listen:
            raise UsageError()
        if not kw.get("source_port"):
            raise PyncError("missing port number")
        kw["host"] = kw.get("source_addr")
        return
    if len(args) == 1:
        if not listen:
            raise PyncError("missing port number")
        if kw.get("source_port"):
            raise UsageError()
        kw["host"] = kw.get("source_addr")
        return
    if listen and (len(args) > 2 or kw.get("source_port") or kw.get("source_addr")):
        raise UsageError()
    kw["host"] = args[0]
    if kw.get("forward") and len(args) != 2:
        raise PyncError("-L forwards to one destination port")


def _with_ports(opts: Options, args: list[str]) -> Options:
    """Parse the port arguments once the flags are known to be consistent."""
    from ..net.addr import parse_port, parse_ports

    if opts.unix:
        return opts
    proto = opts.proto_name
    if opts.listen:
        text = args[-1] if args else opts.source_port
        assert text is not None
        return replace(opts, ports=(parse_port(text, proto, low=0),),
                       source_port=None if not args else opts.source_port)
    ports = parse_ports(args[1:], proto)
    if opts.source_port is not None:
        parse_port(opts.source_port, proto, low=0)
    if opts.forward and len(ports) != 1:
        raise PyncError("-L forwards to one destination port")
    return replace(opts, ports=tuple(ports))
