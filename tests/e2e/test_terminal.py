"""Two terminals chatting through pync, driven by pexpect on real ptys."""

from __future__ import annotations

import sys

import pexpect
import pytest
from pynctest import TIMEOUT, posix_only

pytestmark = [pytest.mark.usefixtures("pync_backend"), posix_only]


def spawn(*args: str) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "pync", *args], timeout=TIMEOUT,
                         echo=False)


def test_two_terminals_chat_and_ctrl_d_ends_both():
    server = spawn("-l", "-v", "-n", "127.0.0.1", "0")
    server.expect(rb"Listening on 127\.0\.0\.1 (\d+)\r\n")
    port = server.match.group(1).decode()
    client = spawn("-N", "127.0.0.1", port)
    server.expect(rb"Connection received on 127\.0\.0\.1 \d+\r\n")

    client.sendline("hello from the client")
    server.expect_exact(b"hello from the client\r\n")
    server.sendline("and hello back")
    client.expect_exact(b"and hello back\r\n")
    client.sendline("grüße, ünïcödé ✓")
    server.expect_exact("grüße, ünïcödé ✓\r\n".encode())

    client.sendeof()  # ^D: the client shuts down its write side (-N) ...
    server.expect(pexpect.EOF)  # ... the listener sees EOF and exits ...
    client.expect(pexpect.EOF)  # ... closing the socket, which ends the client.
    server.close()
    client.close()
    assert server.exitstatus == 0
    assert client.exitstatus == 0


def test_ctrl_c_in_a_terminal():
    server = spawn("-l", "-v", "-n", "127.0.0.1", "0")
    server.expect(rb"Listening on")
    server.sendintr()
    server.expect(pexpect.EOF)
    server.close()
    assert b"Traceback" not in (server.before or b"")
    assert server.signalstatus is None and server.exitstatus == 130


def test_progress_meter_on_a_terminal(tmp_path):
    """--progress draws on a terminal's stderr, and ends with the totals."""
    from pynctest import Server, recv_all

    data = tmp_path / "data"
    data.write_bytes(b"x" * (2 << 20))
    srv = Server(lambda conn: recv_all(conn) and None)
    # stdin from the file through the shell; stderr is the pty.
    term = pexpect.spawn("/bin/sh", ["-c", f'exec "{sys.executable}" -m pync -N --progress '
                                           f'127.0.0.1 {srv.port} < "{data}"'],
                         timeout=TIMEOUT, echo=False)
    term.expect(rb"\r2\.00MiB sent, 0B received \d:\d\d:\d\d \[[^]]+/s\] \[=+\] 100% *\r\n")
    term.expect(pexpect.EOF)
    term.close()
    srv.join()
    assert term.exitstatus == 0


def test_error_messages_read_well_on_a_terminal():
    """What a new user sees for the commonest mistakes: one line, then usage."""
    for args, first in ((["-l"], b"pync: missing port number\r\n"),
                        (["--ssl-pin", "x", "h", "1"],
                         b"pync: --ssl-pin must be sha256: and 64 hex digits: x\r\n"),
                        (["--nope"], b"pync: unrecognized option '--nope'\r\nusage: pync ")):
        term = spawn(*args)
        term.expect(pexpect.EOF)
        term.close()
        assert term.before.startswith(first), term.before
        assert b"Traceback" not in term.before
        assert term.exitstatus == 1
