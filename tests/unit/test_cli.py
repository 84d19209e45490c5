"""argv parsing: every nc error message, exit statuses, flags and aliases."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys

import pytest

import pync
from pync.base.report import PyncError
from pync.cli.parse import LONG, SHORT, parse


def run_err(*argv: str):
    err = io.StringIO()
    status = pync.run(list(argv), stderr=err)
    return status, err.getvalue()


@pytest.mark.parametrize("argv, message", [
    (["localhost", "abc"], "pync: port number invalid: abc"),
    (["localhost", "99999"], "pync: port number too large: 99999"),
    (["localhost", "0"], "pync: port number too small: 0"),
    (["localhost", "1-99999"], "pync: port number too large: 99999"),
    (["localhost"], "pync: missing port number"),
    (["-l"], "pync: missing port number"),
    (["-z", "-l", "1234"], "pync: cannot use -z and -l"),
    (["-k", "localhost", "1"], "pync: must use -l with -k"),
    (["-w", "abc", "localhost", "1"], "pync: timeout invalid: abc"),
    (["-w", "-1", "localhost", "1"], "pync: timeout too small: -1"),
    (["-i", "x", "localhost", "1"], "pync: interval invalid: x"),
    (["-q", "1.5", "localhost", "1"], "pync: quit timer invalid: 1.5"),
    (["-W", "0", "localhost", "1"], "pync: receive limit too small: 0"),
    (["-I", "0", "localhost", "1"], "pync: TCP receive window too small: 0"),
    (["-O", "x", "localhost", "1"], "pync: TCP send window invalid: x"),
    (["-M", "256", "localhost", "1"], "pync: ttl is too large"),
    (["-m", "x", "localhost", "1"], "pync: minttl is invalid"),
    (["-l", "-x", "1.2.3.4", "1234"], "pync: no proxy support for listen"),
    (["-U", "-x", "1.2.3.4", "/tmp/x"], "pync: no proxy support for unix sockets"),
    (["-T", "nosuchtos", "localhost", "1"], "pync: illegal tos value nosuchtos"),
    (["-T", "256", "localhost", "1"], "pync: illegal tos value 256"),
    (["-X", "9", "localhost", "1"], "pync: unsupported proxy protocol"),
    (["-V", "1", "localhost", "1"], "pync: no alternate routing table support available"),
    (["-lU"], "pync: missing socket pathname"),
    (["-U", "a", "b"], "pync: cannot use port with -U"),
    (["no-such-host.invalid", "80"],
     'pync: getaddrinfo for host "no-such-host.invalid" port 80: Name or service not known'),
    (["-e", "a 'b", "localhost", "1"], "pync: -e: No closing quotation: a 'b"),
    (["-e", "", "localhost", "1"], "pync: -e: empty command"),
    (["-e", "/nonexistent/prog", "localhost", "1"],
     "pync: exec /nonexistent/prog: No such file or directory"),
    (["-e", "no-such-program-xyz", "localhost", "1"],
     "pync: exec no-such-program-xyz: command not found"),
    (["-z", "-e", "cat", "localhost", "1"], "pync: cannot use -e/-c with -z"),
    (["-l", "--chat", "-c", "cat", "1"], "pync: cannot use -e/-c with --broker or --chat"),
    (["--ssl", "-u", "localhost", "1"], "pync: cannot use --ssl with -u"),
    (["--ssl-insecure", "-z", "localhost", "1"], "pync: cannot use --ssl with -z"),
    (["-l", "--broker", "--ssl", "1"], "pync: cannot use --ssl with --broker or --chat"),
    (["--ssl-pin", "md5:00", "localhost", "1"],
     "pync: --ssl-pin must be sha256: and 64 hex digits: md5:00"),
    (["-o", "/x", "-z", "localhost", "1"], "pync: cannot use -o/--hex-dump with -z"),
    (["--proxy-dns", "both", "localhost", "1"], "pync: --proxy-dns must be local or remote: both"),
    (["-x", "[::1", "localhost", "1"], "pync: invalid proxy address: [::1"),
    (["-x", "127.0.0.1:http-nope", "localhost", "1"], "pync: port number invalid: http-nope"),
    (["-u", "-x", "127.0.0.1", "h", "1"], "pync: no proxy support for UDP mode"),
    (["-s", "127.0.0.1", "-x", "127.0.0.1", "h", "1"],
     "pync: no proxy support for local source address"),
    (["-F", "-U", "/tmp/x"], "pync: cannot use -F and -U"),
    (["-l", "--ssl-pin", "sha256:" + "0" * 64, "1"],
     "pync: --ssl-pin and --ssl-servername check a server: not with -l or -L"),
    (["--ssl-key", "k.pem", "h", "1"], "pync: --ssl-key needs --ssl-cert"),
    (["-o", "/nonexistent/dir/f", "localhost", "1"],
     "pync: /nonexistent/dir/f: No such file or directory"),
])
def test_error_messages(argv, message):
    status, err = run_err(*argv)
    assert status == 1
    assert err == message + "\n"


@pytest.mark.parametrize("argv, first", [
    (["-Q"], "pync: invalid option -- 'Q'"),
    (["-s"], "pync: option requires an argument -- 's'"),
    (["--bogus"], "pync: unrecognized option '--bogus'"),
    (["--wait"], "pync: option '--wait' requires an argument"),
    (["--listen=1"], "pync: option '--listen' doesn't allow an argument"),
])
def test_getopt_errors_show_usage(argv, first):
    status, err = run_err(*argv)
    lines = err.splitlines()
    assert status == 1
    assert lines[0] == first
    assert lines[1].startswith("usage: pync [-46CDdFhklNnrStUuvZz]")


@pytest.mark.parametrize("argv", [[], ["-U"], ["-l", "-p", "1", "2"],
                                  ["-l", "-s", "127.0.0.1", "1", "2"],
                                  ["-l", "127.0.0.1", "1", "2"]])
def test_bare_usage(argv):
    status, err = run_err(*argv)
    assert status == 1
    assert err.startswith("usage: pync ")


def test_options_and_aliases():
    o = parse(["-46", "-v", "-v", "-n", "-N", "-q", "-1", "localhost", "ssh", "20-22"])
    assert o.family == socket.AF_INET6 and o.verbose == 2 and o.numeric
    assert o.ports == (22, 20, 21, 22)
    assert o.quit_after_eof == -1 and not o.quits_after_eof and o.half_close
    o = parse(["--listen", "--keep-open", "--verbose", "--wait", "5", "--nodns", "0"])
    assert o.listen and o.keep_open and o.verbose == 1 and o.wait == 5 and o.ports == (0,)
    o = parse(["--wait=7", "--crlf", "-T", "0x10", "--tos", "af11", "h", "1"])
    assert o.wait == 7 and o.crlf and o.tos == 0x28
    o = parse(["-l", "-s", "127.0.0.1", "-p", "http"])
    assert o.host == "127.0.0.1" and o.ports == (80,)
    o = parse(["h", "30-25"])
    assert o.ports == (25, 26, 27, 28, 29, 30)
    o = parse(["h", "1", "-v"])  # GNU permutation, as glibc's getopt does for nc
    assert o.verbose == 1
    o = parse(["-q", "0", "h", "1"])
    assert o.quits_after_eof and o.half_close


def test_every_parser_flag_has_a_long_alias():
    letters = {c for c in SHORT if c != ":"}
    assert letters <= set(LONG.values())


def test_unknown_service_is_invalid_port():
    with pytest.raises(PyncError, match="port number invalid: nosuchservice"):
        parse(["h", "nosuchservice"])


def test_interpret_md5sig_without_terminal():
    # nc reads the key from the terminal; none here (setsid, no ctty).
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "pync", "-S", "127.0.0.1", "9"],
                       capture_output=True, timeout=20, start_new_session=True,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert r.stderr == b"pync: Unable to read TCP MD5SIG password\n"


def test_windows_socket_errors_read_as_the_c_library_words():
    """Python reports Windows' socket errors with their WSAE* numbers, which
    no C library's strerror() knows: pync says what nc would on Linux."""
    import errno

    from pync.base.report import errno_text, strerror

    assert errno_text(10061) == "Connection refused"  # WSAECONNREFUSED
    assert errno_text(10060) == "Connection timed out"
    assert strerror(OSError(10054, "An existing connection was forcibly closed")) \
        == "Connection reset by peer"
    assert errno_text(errno.ECONNREFUSED) == "Connection refused"  # the platform's own


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("work", ["pass", "raise Terminated(15)"])
def test_a_signal_during_shutdown_is_no_traceback(work):
    """A SIGTERM that comes once the session is over (here: while the
    interpreter shuts down, as a -l -k listener stopping its spawned workers
    can time it) ends the process without an "Exception ignored" traceback."""
    code = f"""if 1:
        import atexit, os, signal
        from pync.cli.run import exit_with
        from pync.platform.signals import Terminated, install_signal_handlers
        atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))
        def work():
            install_signal_handlers()
            {work}
            return 0
        exit_with(work)
    """
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert r.stderr == b""
    # Killed by the signal's default action, as any program is.
    assert r.returncode == -signal.SIGTERM


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
@pytest.mark.parametrize("signame, status", [("SIGTERM", 143), ("SIGINT", 130)])
@pytest.mark.parametrize("then", ["signal.pause()", "pass"])
def test_a_signal_inside_a_finalizer_still_ends_pync(signame, status, then):
    """A signal that lands in a __del__ (as in Popen's, when a -k listener
    stops its workers) cannot unwind from there: it is delivered again and
    ends pync with its status, no "Exception ignored" traceback; also when
    the work ends at once after it (then: "pass")."""
    code = f"""if 1:
        import gc, os, signal
        from pync.cli.run import exit_with
        from pync.platform.signals import install_signal_handlers

        class Finalized:
            def __del__(self):
                os.kill(os.getpid(), signal.{signame})
                for _ in range(1000):  # the handler runs in here
                    pass

        def work():
            install_signal_handlers()
            Finalized()
            gc.collect()
            {then}  # pause: the signal, delivered again, ends this (bounded by the timeout)
            return 0
        exit_with(work)
    """
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert (r.returncode, r.stderr) == (status, b"")
