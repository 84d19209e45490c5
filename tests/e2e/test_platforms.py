"""The portable backend: chosen by what the platform offers, and a clear
refusal for what it lacks.

With Linux's APIs hidden (tests/portable/sitecustomize.py, as on Windows),
pync must pick its portable backend by itself, and the flags that need what
is hidden (-U, -F, -S, -m) must each end with one line and status 1.  The
rest of the suites run on this backend too (tests/conftest.py).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from pynctest import TIMEOUT, hide_linux_apis, linux_only, run_pync

pytestmark = linux_only

CHOSEN = "from pync.platform import backend; print(backend().name)"
HIDDEN = ("import os, select, socket, signal\n"
          "assert not hasattr(select, 'poll') and not hasattr(os, 'fork')\n"
          "assert not hasattr(socket, 'AF_UNIX') and not hasattr(signal, 'SIGHUP')\n")


def test_the_backend_follows_what_the_platform_offers(monkeypatch):
    native = subprocess.run([sys.executable, "-c", CHOSEN], capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert native.stdout.strip() == "linux", native.stderr
    hide_linux_apis(monkeypatch)
    hidden = subprocess.run([sys.executable, "-c", HIDDEN + CHOSEN], capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stdout.strip() == "portable"


@pytest.mark.parametrize("argv, letter", [
    (["-U", "/tmp/pync-no-such.sock"], "U"),
    (["-lU", "/tmp/pync-no-such.sock"], "U"),
    (["-zU", "/tmp/pync-no-such.sock"], "U"),
    (["-uU", "/tmp/pync-no-such.sock"], "U"),
    (["-F", "127.0.0.1", "9"], "F"),
    (["-S", "127.0.0.1", "9"], "S"),
    (["-m", "5", "127.0.0.1", "9"], "m"),
    (["-l", "-m", "5", "127.0.0.1", "0"], "m"),
])
def test_what_the_platform_lacks_is_refused_in_one_line(monkeypatch, argv, letter):
    hide_linux_apis(monkeypatch)
    r = run_pync(*argv)
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == f"pync: -{letter} is not available on this platform\n".encode()


def test_the_same_flags_work_where_the_platform_has_them(sock_dir):
    """The refusal is the portable platform's: on Linux -U connects (here to
    nothing: nc's error), and -S/-m reach the socket."""
    r = run_pync("-U", f"{sock_dir}/none")
    assert r.returncode == 1
    assert r.stderr == f"pync: {sock_dir}/none: No such file or directory\n".encode()
