"""Bad input, generated: argv, ports, ranges, services, addresses.

Whatever the command line, pync answers with an exit status of 0 or 1, a
``pync: ...`` line when it refuses, and never a traceback.  The full runs
happen in-process through ``pync.run`` and contact nothing but 127.0.0.1
and ::1: every host is resolved numerically (``-n`` always comes first) and
checked to be loopback or unresolvable, every port is one this module holds
bound but not listening (so it refuses at once), and nothing listens
(-l, -k are only parsed, never run) or waits on UDP.

Examples are derandomized so the suite stays repeatable; run with
``--hypothesis-seed=random`` to explore further.
"""

from __future__ import annotations

import io
import os
import socket
import threading

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import pync
from pync.base.numbers import strtonum
from pync.base.report import USAGE, PyncError
from pync.cli.parse import LONG, SHORT, InfoRequest, parse, parse_pin, parse_tos
from pync.net.addr import parse_port, parse_ports, resolve, resolve_local, split_host_port

BLOCK = 4  # contiguous reserved ports, for ranges


def _reserve_block() -> tuple[list[socket.socket], list[int]]:
    """BLOCK consecutive ports bound on 127.0.0.1 and ::1, none listening:
    connecting to any of them is refused, whoever else runs on this host."""
    for _ in range(100):
        held: list[socket.socket] = []
        first = socket.socket()
        first.bind(("127.0.0.1", 0))
        base = first.getsockname()[1]
        held.append(first)
        try:
            if base + BLOCK > 65536:
                raise OSError("too high")
            for port in range(base, base + BLOCK):
                if port != base:
                    s = socket.socket()
                    held.append(s)
                    s.bind(("127.0.0.1", port))
                s6 = socket.socket(socket.AF_INET6)
                held.append(s6)
                s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s6.bind(("::1", port))
        except OSError:
            for s in held:
                s.close()
            continue
        return held, list(range(base, base + BLOCK))
    raise AssertionError("no block of free ports")


HELD, PORTS = _reserve_block()
TMP = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"pync-fuzz-{os.getpid()}")


def _is_loopback_or_unresolvable(host: str) -> bool:
    """Would ``-n`` send anything off this machine for host?"""
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM, 0,
                                   socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return True  # pync -n fails the same way: nothing is sent
    for *_, sockaddr in infos:
        addr = sockaddr[0].split("%")[0]
        if not (addr.startswith("127.") or addr == "::1"):
            return False
    return True


def _is_service(text: str) -> bool:
    for proto in ("tcp", "udp"):
        try:
            socket.getservbyname(text, proto)
            return True
        except (OSError, ValueError):
            pass
    return False


def _safe_port_text(text: str) -> bool:
    """A port argument that can only name a reserved port or fail."""
    if _is_service(text):
        return False
    try:
        ports = parse_ports([text])
    except PyncError:
        return True
    return all(p in PORTS for p in ports)


junk = st.text(max_size=10)
numbers = st.one_of(st.integers(-(2**40), 2**40).map(str), st.sampled_from(
    ["", "0", "-0", "+1", " 5", "5 ", "0x10", "1e3", "1.5", "99999999999999999999",
     "\u0663", "5\x00", "2147483647", "2147483648", "-2147483649"]))
reserved = st.sampled_from(PORTS).map(str)
port_text = st.one_of(
    reserved,
    st.tuples(st.sampled_from(PORTS), st.sampled_from(PORTS)).map(lambda t: f"{t[0]}-{t[1]}"),
    st.one_of(numbers, junk, st.sampled_from(["-", "1-", "-5", "a-b", "0-0", "65536",
                                              "70000-1", f"{PORTS[0]}-x"])
              ).filter(_safe_port_text),
)
host_text = st.one_of(
    st.sampled_from(["127.0.0.1", "127.1", "127.0.0.2", "::1", "localhost", "bad..name",
                     "a" * 64 + ".invalid", "[::1]", "::1%lo", "fe80::1%nosuchif",
                     "127.0.0.1\x00", "\u00e9t\u00e9.example", "\x7f", ""]),
    junk,
).filter(_is_loopback_or_unresolvable)
path_text = st.one_of(
    st.sampled_from(["", "/nonexistent/dir/s", "/" + "y" * 120, "a\x00b"]),
    junk.map(lambda t: os.path.join(TMP, "p" + t.replace("/", "_").replace("\x00", "0"))),
)
command_text = st.sampled_from(["cat", "/nonexistent", "", "'unterminated", "echo $HOME; x",
                                "no-such-program-here", "true"])

# Options run() may take: never -l/-k (they wait for peers), -u (waits on
# UDP), -S (asks on /dev/tty), -F (passes a socket on stdout) or a long -i.
FLAGS = ["-4", "-6", "-b", "-C", "-D", "-d", "-h", "-N", "-n", "-r", "-t", "-v", "-vv",
         "-z", "-Z", "-U", "--version", "--broker", "--chat", "--send-only", "--recv-only",
         "--append-output", "--ssl", "--ssl-verify", "--ssl-insecure", "--progress",
         "--progress=force", "--progress=bad", "-dNv", "-zv", "--"]
VALUED = {
    "-I": numbers, "-O": numbers, "-M": numbers, "-m": numbers, "-q": numbers,
    "-W": numbers, "-w": numbers, "-i": st.sampled_from(["0", "x", "-1", ""]),
    "-T": st.one_of(numbers, junk, st.sampled_from(["af11", "0xff", "0x100", "0x", "ef"])),
    "-V": numbers, "-X": st.one_of(junk, st.sampled_from(["4", "5", "connect", "SOCKS5"])),
    "-P": junk, "-p": port_text, "-s": host_text,
    "-x": st.one_of(host_text, st.tuples(host_text, port_text).map(lambda t: f"{t[0]}:{t[1]}"),
                    port_text.map(lambda p: f"[::1]:{p}"),
                    st.sampled_from(["[::1", "[::1]x", ":80", "[]:1"])),
    "-e": command_text, "-c": command_text, "-o": path_text, "--hex-dump": path_text,
    "--max-conns": numbers, "--allow": st.sampled_from(["127.0.0.1", "10.0.0.0/33", ","]),
    "--denyfile": path_text, "--udp-probe": junk,
    "--proxy-dns": st.one_of(junk, st.sampled_from(["local", "remote"])),
    "--proxy-auth": junk, "--ssl-cert": path_text, "--ssl-key": path_text,
    "--ssl-trustfile": path_text, "--ssl-pin": st.one_of(junk, st.just("sha256:" + "ab" * 32)),
    "--ssl-alpn": junk, "--ssl-servername": junk,
    "--ssl-ciphers": junk,
}


@st.composite
def argvs(draw) -> list[str]:
    """-n first, then options, then [host [ports...]] or a UNIX path."""
    argv = ["-n"]
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            argv.append(draw(st.sampled_from(FLAGS)))
        else:
            name = draw(st.sampled_from(sorted(VALUED)))
            argv += [name, draw(VALUED[name])]
    if "-U" in argv:
        argv.append(draw(path_text))
    elif draw(st.integers(0, 9)):
        argv.append(draw(host_text))
        argv += draw(st.lists(port_text, max_size=3))
    return argv


ALLOWED_LINE_STARTS = ("pync: ", "Connection to ", "usage: pync", "\t")


def _run_in_process(argv: list[str]) -> tuple[int, str, bytes]:
    err = io.StringIO()
    out = io.BytesIO()
    status = pync.run(argv, stdin=b"", stdout=out, stderr=err)
    return status, err.getvalue(), out.getvalue()


def _parses(argv: list[str]) -> bool:
    try:
        parse(argv)
    except PyncError:
        return False
    except InfoRequest:
        return True
    return True


@pytest.fixture(scope="module", autouse=True)
def _proxy_password_and_tmp():
    """-P never prompts (the password comes from the environment);
    the files -o and friends may create land in one temp dir."""
    old = os.environ.get("PYNC_PROXY_PASSWORD")
    os.environ["PYNC_PROXY_PASSWORD"] = "secret"
    os.makedirs(TMP, exist_ok=True)
    yield
    if old is None:
        del os.environ["PYNC_PROXY_PASSWORD"]
    else:
        os.environ["PYNC_PROXY_PASSWORD"] = old
    import shutil
    shutil.rmtree(TMP, ignore_errors=True)


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@settings(max_examples=600, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(argvs())
@example(["-n", "127.0.0.1", str(PORTS[0])])
@example(["-n", "-z", "-v", "127.0.0.1", f"{PORTS[-1]}-{PORTS[0]}"])
@example(["-n", "-e", "echo $HOME; x", "127.0.0.1", str(PORTS[1])])
@example(["-n", "-x", f"127.0.0.1:{PORTS[0]}", "-P", "u", "127.0.0.1", "80"])
@example(["-n", "-U", "/nonexistent/dir/s"])
@example(["-n", "-vv", "--ssl", "::1", str(PORTS[2])])
def test_random_argv_never_raises(argv):
    """Status 0 or 1; on 1 a ``pync:`` line or the usage text, unless the
    command line was fine and only the connection failed (silent, as nc)."""
    threads, fds = threading.active_count(), _fd_count()
    try:
        status, err, _out = _run_in_process(argv)
    except BaseException as exc:  # any escape is the failure
        pytest.fail(f"pync.run({argv!r}) raised {exc!r}")
    assert status in (0, 1), (argv, status, err)
    assert "Traceback" not in err
    # Values are echoed raw, as nc does: a newline in one starts a new line.
    lines = err.split("\n")[:-1] if not any("\n" in a for a in argv) else err.split("\n")[:1]
    for line in lines:
        assert line.startswith(ALLOWED_LINE_STARTS) or line in USAGE, (argv, err)
    if status == 1 and not err:
        assert _parses(argv), f"{argv!r}: bad command line refused without a message"
    assert threading.active_count() == threads, f"{argv!r} left a thread running"
    assert _fd_count() == fds, f"{argv!r} leaked a descriptor"


ALL_SHORT = ["-" + c for c in SHORT if c != ":"]
ALL_LONG = ["--" + name.rstrip("=?") for name in LONG]
any_token = st.one_of(
    st.sampled_from(ALL_SHORT + ALL_LONG), st.text(max_size=10), numbers,
    st.sampled_from(["-", "--", "-lk", "-vvz", "-lkU", "--ssl-pin=sha256:",
                     "--progress=force", "--max-conns=0", "--prox", "--s", "1-65535",
                     "65535-1", "http-https", "80-http", "-1-5", "\x00", "@abs"]))


@settings(max_examples=800, deadline=None, derandomize=True)
@given(st.lists(any_token, max_size=8))
def test_any_argv_parses_or_refuses_with_a_message(argv):
    """The parser alone (-l, -k, -u, -e included): Options, a request for
    help, or a PyncError that says something."""
    try:
        parse(argv)
    except InfoRequest as info:
        assert info.text
    except PyncError as err:
        assert err.message or err.show_usage


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.text(max_size=16), st.sampled_from(["tcp", "udp"]))
def test_port_parsers_take_any_string(text, proto):
    for call in (lambda: parse_port(text, proto), lambda: parse_port(text, proto, low=0),
                 lambda: parse_ports([text], proto), lambda: parse_ports([text, text], proto)):
        try:
            got = call()
        except PyncError as err:
            assert err.message.startswith("port number ")
            assert err.message.endswith(text.split("-", 1)[-1]) or text in err.message
        else:
            ports = got if isinstance(got, list) else [got]
            assert all(0 <= p <= 65535 for p in ports)
            if isinstance(got, list) and len(got) > 2:
                assert "-" in text  # only a range gives more than one port


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.text(max_size=24))
def test_numbers_and_keywords_take_any_string(text):
    try:
        value = strtonum(text, -5, 5)
    except ValueError as exc:
        assert str(exc) in ("invalid", "too small", "too large")
    else:
        assert -5 <= value <= 5
    for call in (lambda: parse_tos(text), lambda: parse_pin(text)):
        try:
            call()
        except PyncError as err:
            assert (err.message and text in err.message) or err.message.startswith("illegal")


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.text(max_size=24))
def test_proxy_address_parser_takes_any_string(text):
    try:
        host, port = split_host_port(text, 1080)
    except PyncError as err:
        assert err.message.startswith(("invalid proxy address: ", "port number "))
    else:
        assert host and 1 <= port <= 65535


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=20), st.sampled_from([socket.AF_UNSPEC, socket.AF_INET,
                                              socket.AF_INET6]))
def test_numeric_resolution_takes_any_string(text, family):
    """-n: any host text resolves to addresses or fails with gai's words
    (AI_NUMERICHOST: nothing is looked up on the network)."""
    for call in (lambda: resolve(text, 80, family, socket.SOCK_STREAM, True),
                 lambda: resolve_local(text, "80", family, socket.SOCK_STREAM, True)):
        try:
            infos = call()
        except PyncError as err:
            assert err.message.startswith(("getaddrinfo for host ", "getaddrinfo: "))
        else:
            assert infos


IDNA_REJECTS = ["bad..name", "a" * 64 + ".invalid", ".", "x..", "\u00e9" * 70]


@pytest.mark.parametrize("host", IDNA_REJECTS)
def test_unencodable_names_read_like_gai_errors(host):
    """Names Python's idna codec refuses fail with glibc's words, as in nc
    (not "encoding with 'idna' codec failed")."""
    with pytest.raises(PyncError) as info:
        resolve(host, 80, socket.AF_UNSPEC, socket.SOCK_STREAM, True)
    assert info.value.message == (f'getaddrinfo for host "{host}" port 80: '
                                  "Name or service not known")
