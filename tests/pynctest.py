"""Test helpers: start pync as a real process, peers on loopback, bounded waits.

Every wait here has a timeout; nothing sleeps to synchronise.  Listening
pync processes are started on port 0 with -v and the kernel-chosen port is
read from their ``Listening on ... PORT`` line.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Callable, Optional

import pytest

PYNC = [sys.executable, "-m", "pync"]
# On PYTHONPATH, its sitecustomize hides Linux's APIs: pync then runs on its
# portable backend, as on Windows (see tests/portable/sitecustomize.py).
PORTABLE_SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "portable")


# What some tests need of the machine they run on (the suite runs on Linux in
# .ci/run; the GitHub workflow also runs it on macOS and Windows).
linux_only = pytest.mark.skipif(not hasattr(select, "epoll"),
                                reason="Linux's own APIs (the linux backend, or hiding them)")
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"),
                                reason="reads processes and descriptors from /proc")
posix_only = pytest.mark.skipif(os.name == "nt",
                                reason="POSIX signals, terminals or shell tools")


def hide_linux_apis(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pync processes this test starts take the portable backend."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (PORTABLE_SITE, os.environ.get("PYTHONPATH")) if p))
TIMEOUT = 20.0  # upper bound for any single wait in the suite


def pync_cmd(*args: str) -> list[str]:
    return [*PYNC, *args]


def run_pync(*args: str, input: bytes = b"", timeout: float = TIMEOUT,
             env: Optional[dict] = None, **kw) -> subprocess.CompletedProcess:
    """Run pync to completion with bytes on stdin; bounded by timeout."""
    return subprocess.run(pync_cmd(*args), input=input, capture_output=True,
                          timeout=timeout, env=env, **kw)


class Proc:
    """A running process with stdout/stderr collected by background readers."""

    def __init__(self, argv: list[str], stdin=subprocess.PIPE, **kw) -> None:
        self.argv = argv
        self.p = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, **kw)
        self.out = bytearray()
        self.err = bytearray()
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.p.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.p.stderr, self.err), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _pump(self, stream: IO[bytes], sink: bytearray) -> None:
        while True:
            chunk = stream.read1(65536)  # type: ignore[attr-defined]
            if not chunk:
                break
            with self._cond:
                sink.extend(chunk)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _wait_match(self, sink: bytearray, reader: threading.Thread, what: str,
                    pattern: str, timeout: float) -> re.Match:
        rx = re.compile(pattern.encode(), re.S)
        with self._cond:
            self._cond.wait_for(lambda: rx.search(sink) or not reader.is_alive(), timeout)
            m = rx.search(sink)
        if not m:
            self.kill()
            raise AssertionError(f"{what} never matched {pattern!r}: {bytes(sink)!r}")
        return m

    def wait_stderr(self, pattern: str, timeout: float = TIMEOUT) -> re.Match:
        """Block until stderr matches the regex (bounded), return the match."""
        return self._wait_match(self.err, self._readers[1], "stderr", pattern, timeout)

    def wait_stdout(self, pattern: str, timeout: float = TIMEOUT) -> re.Match:
        """Block until stdout matches the regex (bounded), return the match."""
        return self._wait_match(self.out, self._readers[0], "stdout", pattern, timeout)

    def send(self, data: bytes) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def close_stdin(self) -> None:
        if self.p.stdin and not self.p.stdin.closed:
            self.p.stdin.close()

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        for t in self._readers:
            t.join(timeout)
        return rc

    def running(self) -> bool:
        return self.p.poll() is None

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(TIMEOUT)

    def stop(self) -> None:
        """End a pync that serves until told (-l -k, -L, -l -X): SIGTERM, then
        status 143 (Windows has no SIGTERM: terminate() gives 1), and no
        traceback."""
        self.p.terminate()
        assert self.wait() == (143 if os.name != "nt" else 1), bytes(self.err)
        assert b"Traceback" not in bytes(self.err)


def start_listener(*args: str, host: str = "127.0.0.1", stdin=subprocess.PIPE,
                   **kw) -> tuple[Proc, int]:
    """Start ``pync -l -v -n ARGS host 0`` and return it with its port."""
    proc = Proc(pync_cmd("-l", "-v", "-n", *args, host, "0"), stdin=stdin, **kw)
    m = proc.wait_stderr(r"Listening on \S+ (\d+)\n")
    return proc, int(m.group(1))


def connect(port: int, host: str = "127.0.0.1", timeout: float = TIMEOUT) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def recv_all(s: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Read until EOF (bounded)."""
    s.settimeout(timeout)
    chunks = []
    while True:
        d = s.recv(65536)
        if not d:
            return b"".join(chunks)
        chunks.append(d)


class Server:
    """A test TCP server on 127.0.0.1 (or ::1) running handler(conn) per client."""

    def __init__(self, handler: Callable[[socket.socket], None],
                 host: str = "127.0.0.1", backlog: int = 8) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(TIMEOUT)
        try:
            conn, _ = self.sock.accept()
        except OSError as exc:
            self.errors.append(exc)
            return
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                self.handler(conn)
            except BaseException as exc:  # reported by join()
                self.errors.append(exc)

    def join(self, timeout: float = TIMEOUT) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "server thread still running"
        self.sock.close()
        if self.errors:
            raise self.errors[0]


def require_tool(name: str) -> str:
    """Path of an interop peer; skip if absent unless PYNC_REQUIRE_INTEROP=1."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("PYNC_REQUIRE_INTEROP") == "1":
        pytest.fail(f"{name} is required (PYNC_REQUIRE_INTEROP=1) but not installed")
    pytest.skip(f"{name} not installed")
    raise AssertionError("unreachable")


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out, for peers that cannot listen on 0.

    (Racy in principle; used only for third-party tools without port-0 support.)
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def filtered_port(keep: list[socket.socket]) -> int:
    """A port on 127.0.0.1 that never answers: a listener whose accept queue
    is full drops new SYNs, as a firewall would.  Its sockets go into keep
    (close them to free the port)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    port = s.getsockname()[1]
    keep.append(s)
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        keep.append(f)
    return port


# -- /proc -----------------------------------------------------------------

def children_of(pid: int) -> list[int]:
    """PIDs whose parent is pid (zombies included)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    out = []
    for kid in children_of(pid):
        out.append(kid)
        out.extend(descendants(kid))
    return out


def state(pid: int) -> str:
    """A process's state letter from /proc, or "gone"."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> dict[int, str]:
    """The process's descriptors and what they point to."""
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return fds


def wait_until(predicate, timeout: float = TIMEOUT, what: str = "condition") -> None:
    """Poll predicate() (bounded) until it is true."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        tick.wait(0.01)  # sleep-ok: bounded poll of /proc or kernel state


# -- TLS ---------------------------------------------------------------------

class Certs:
    """Certificates made by trustme for the TLS tests, as file paths."""

    def __init__(self, d: str) -> None:
        import hashlib
        import ssl

        import trustme

        ca = trustme.CA()
        self.ca = os.path.join(d, "ca.pem")
        ca.cert_pem.write_to_path(self.ca)
        self.other_ca = os.path.join(d, "other-ca.pem")  # a CA that signed none of these
        trustme.CA().cert_pem.write_to_path(self.other_ca)
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.server_cert = os.path.join(d, "server.pem")
        self.server_key = os.path.join(d, "server.key")
        server.cert_chain_pems[0].write_to_path(self.server_cert)
        server.private_key_pem.write_to_path(self.server_key)
        client = ca.issue_cert("client.example")
        self.client_cert = os.path.join(d, "client.pem")
        self.client_key = os.path.join(d, "client.key")
        client.cert_chain_pems[0].write_to_path(self.client_cert)
        client.private_key_pem.write_to_path(self.client_key)
        der = ssl.PEM_cert_to_DER_cert(server.cert_chain_pems[0].bytes().decode())
        self.server_fp = "sha256:" + hashlib.sha256(der).hexdigest()  # as pync -v shows it

    @property
    def server(self) -> tuple[str, ...]:
        """pync's options to serve the server certificate."""
        return ("--ssl", "--ssl-cert", self.server_cert, "--ssl-key", self.server_key)

    @property
    def client(self) -> tuple[str, ...]:
        """pync's options to trust the CA."""
        return ("--ssl", "--ssl-trustfile", self.ca)


def run_in_threads(jobs: list, width: int = 8) -> list:
    """Run the callables ``width`` at a time in threads; their results in order."""
    results: list = [None] * len(jobs)
    errors: list[BaseException] = []
    lock = threading.Lock()
    pending = list(enumerate(jobs))

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                i, job = pending.pop(0)
            try:
                results[i] = job()
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(width)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "jobs still running"
    assert not errors, errors
    return results
