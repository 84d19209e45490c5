"""Signals that land at the wrong moment: while -l -k -e forks a worker,
or while a UNIX listener is still being set up.

These races happened on their own before they were fixed (SIGTERM right
after "Connection received": about 1 run in 30 hung, and with a burst of
connections about 1 in 3 left a worker running; SIGTERM right after
"Bound on" often left the socket file); strace's syscall tampering makes
each moment certain, so these tests guard the fixes:

* ``-e inject=clone:signal=SIGTERM:when=1`` — the listener's SIGTERM is
  handled while os.fork() runs.  (It used to raise between os.fork() and
  recording the pid, so stop() never terminated that worker, which outlived
  the listener and kept serving.)
* ``-f -e inject=gettid:delay_enter=...`` plus ``inject=wait4:signal=SIGTERM``
  — the listener is told to stop while its newest worker is still in
  CPython's after-fork code.  (The worker used to lose the SIGTERM stop()
  sent — or print "Exception ignored in: <function _after_fork>" — and
  stop() waited for it without a deadline: the listener hung for as long as
  the client stayed connected.)
* ``-e inject=listen:signal=SIGTERM`` (``bind`` for -lUu) — the signal
  arrives once bind() has created the socket file.  (It used to come before
  the try/finally that removes the file: the file stayed.)

Skipped where strace is missing or ptrace is not allowed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import uuid

import pytest
from faultkit import state, wait_until
from pynctest import TIMEOUT, Proc, connect, pync_cmd


def _strace() -> str:
    path = shutil.which("strace")
    if not path:
        pytest.skip("strace not installed")
    probe = subprocess.run([path, "-o", "/dev/null", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("ptrace not permitted here")
    return path


def _marked() -> tuple[str, list[str]]:
    """A unique mark in the listener's command line (its workers share it)."""
    mark = f"mark-{uuid.uuid4().hex}"
    return mark, pync_cmd("-l", "-k", "-v", "-n", "-c", f"exec cat # {mark}",
                          "127.0.0.1", "0")


def _survivors(mark: str) -> list[int]:
    """Live processes whose command line holds mark (pync and its workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if mark.encode() in cmdline and b"strace" not in cmdline.split(b"\0")[0] \
                and state(int(entry)) not in ("gone", "Z"):
            found.append(int(entry))
    return found


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_sigterm_during_fork_leaves_no_worker():
    strace = _strace()
    mark, argv = _marked()
    listener = Proc([strace, "-o", "/dev/null", "-e", "trace=clone,clone3,fork,vfork",
                     "-e", "inject=clone,clone3,fork,vfork:signal=SIGTERM:when=1", *argv])
    port = int(listener.wait_stderr(r"Listening on \S+ (\d+)\n").group(1))
    client = connect(port)
    try:
        client.sendall(b"hello\n")
        # (Proc.wait would also wait for pync's stdout to close: a surviving
        # worker holds it open.)
        assert listener.p.wait(TIMEOUT) == 143
        left: list[int] = []

        def settled() -> bool:
            left[:] = _survivors(mark)
            return not left

        try:
            wait_until(settled, timeout=1, what="workers to end")
        except AssertionError:
            pass
        assert left == [], f"workers outlived the listener: {left}"
    finally:
        client.close()
        _kill_all(_survivors(mark))
        listener.kill()


def test_sigterm_while_a_worker_starts_does_not_hang():
    strace = _strace()
    mark, argv = _marked()
    listener = Proc([strace, "-f", "-o", "/dev/null", "-e", "trace=gettid,wait4",
                     "-e", "inject=gettid:delay_enter=300000:when=1",
                     "-e", "inject=wait4:signal=SIGTERM:when=1", *argv])
    port = int(listener.wait_stderr(r"Listening on \S+ (\d+)\n").group(1))
    client = connect(port)  # stays connected: the worker's session never ends
    try:
        client.sendall(b"hello\n")
        try:
            status = listener.p.wait(2)
        except subprocess.TimeoutExpired:
            status = None
        assert status == 143, "the listener hung on SIGTERM"
        assert b"Exception ignored" not in listener.err
    finally:
        client.close()
        _kill_all(_survivors(mark))
        listener.kill()


@pytest.mark.parametrize("syscall, flags", [("listen", "-lU"), ("bind", "-lUu")],
                         ids=["stream", "dgram"])
def test_signal_during_unix_listener_setup_removes_the_file(sock_dir, syscall, flags):
    strace = _strace()
    path = os.path.join(sock_dir, "s")
    r = subprocess.run([strace, "-o", "/dev/null", "-e", f"trace={syscall}",
                        "-e", f"inject={syscall}:signal=SIGTERM:when=1",
                        *pync_cmd(flags, "-v", path)],
                       capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert r.returncode == 143
    assert not os.path.lexists(path), "socket file left behind"


def _unix_session(strace: str, path: str, trace_out: str, inject: list[str]) -> int:
    """-lU path under strace (syscalls touching path only): one client
    connects, sends a byte and leaves; pync's status."""
    listener = Proc([strace, "-o", trace_out, "-P", path,
                     "-e", "trace=newfstatat,lstat,statx,stat", *inject,
                     *pync_cmd("-lU", "-v", path)])
    try:
        listener.wait_stderr("Listening on")
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(TIMEOUT)
            c.connect(path)
            c.sendall(b"x")
        return listener.wait()
    finally:
        listener.kill()


def test_signal_during_unix_listener_teardown_removes_the_file(sock_dir):
    strace = _strace()
    path = os.path.join(sock_dir, "s")
    trace = os.path.join(sock_dir, "trace")
    # A first run counts the stat calls on path: the last is the clean-up's.
    assert _unix_session(strace, path, trace, []) == 0
    assert not os.path.lexists(path)
    with open(trace) as f:
        calls = sum(1 for line in f if path in line and "stat" in line)
    assert calls >= 1
    # The second run is told to stop exactly then.
    inject = f"inject=newfstatat,lstat,statx,stat:signal=SIGTERM:when={calls}"
    status = _unix_session(strace, path, trace, ["-e", inject])
    assert status == 143
    assert not os.path.lexists(path), "socket file left behind"
