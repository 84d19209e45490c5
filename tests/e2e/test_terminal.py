"""Two terminals chatting through pync, driven by pexpect on real ptys."""

from __future__ import annotations

import sys

import pexpect
from pynctest import TIMEOUT


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
