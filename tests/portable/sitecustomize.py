"""The portable test mode: hide Linux's APIs before pync is imported.

Put on PYTHONPATH (``tests/conftest.py`` does it for the tests that run on
both backends, ``scripts/bench --portable`` for its rows), this module runs
at interpreter start-up and takes away what Windows lacks, so that pync
must choose its portable backend by what it finds, as it would there:

* ``select``: only ``select.select``, which refuses anything but a socket,
  as Windows' select() does (so pipes, terminals and files are bridged);
* ``os``: fork, splice, sendfile, readv, pipe2, set_blocking, the wait
  macros, O_CLOEXEC/O_NONBLOCK/O_NOCTTY and the other POSIX-only calls;
* ``fcntl`` and ``resource`` cannot be imported;
* ``socket``: AF_UNIX, SCM_RIGHTS and fd passing, SOCK_NONBLOCK, Linux's
  socket options; ``socket.socketpair()`` is a pair of TCP sockets on
  127.0.0.1, as Windows makes it;
* ``signal``: SIGHUP, SIGCHLD and the other POSIX signals, pthread_sigmask.

The standard library modules that bind such names when imported
(subprocess, selectors, shutil, tempfile) are imported first, with the
reduced ``select``, so they work as they would on a platform without them;
the few names they look up at call time on POSIX stay (os.WNOHANG and
os.O_NOCTTY for subprocess and getpass, signal.SIGKILL for Popen.kill).
Nothing of pync's is touched: this only takes away.
"""

import errno
import functools
import os
import select
import stat
import sys

_real_select = select.select


def _select(rlist, wlist, xlist, timeout=None):
    for group in (rlist, wlist, xlist):
        for obj in group:
            fd = obj if isinstance(obj, int) else obj.fileno()
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                raise OSError(errno.ENOTSOCK, "select() takes sockets only (as on Windows)")
    return _real_select(rlist, wlist, xlist, timeout)


for _name in list(vars(select)):
    if _name.lower().startswith(("poll", "epoll", "devpoll", "kqueue", "kevent", "kq_")):
        delattr(select, _name)
# Not a plain function: selectors keeps select.select as a class attribute,
# where a function would be bound as a method (a builtin is not).
select.select = functools.partial(_select)

# Bind what these modules bind at import, with the reduced select above
# (socket imports selectors).
import selectors  # noqa: E402
import shutil  # noqa: E402, F401
import socket  # noqa: E402
import subprocess  # noqa: E402, F401
import tempfile  # noqa: E402, F401
import threading  # noqa: E402, F401

assert selectors.DefaultSelector is selectors.SelectSelector

for _name in ("fork", "forkpty", "splice", "sendfile", "readv", "writev", "preadv",
              "pwritev", "pipe2", "makedev", "major", "minor", "mkfifo", "mknod",
              "set_blocking", "get_blocking", "openpty", "killpg", "getpgid", "setsid",
              "setpgid", "wait3", "wait4", "WIFEXITED", "WEXITSTATUS",
              "WIFSIGNALED", "WTERMSIG", "WIFSTOPPED", "posix_spawn", "posix_spawnp",
              "register_at_fork", "sched_getaffinity", "O_CLOEXEC", "O_NONBLOCK",
              "O_NOFOLLOW", "O_SYNC", "O_DSYNC", "O_ASYNC", "O_DIRECT",
              "SPLICE_F_MOVE", "SPLICE_F_NONBLOCK", "SPLICE_F_MORE", "ttyname", "getuid",
              "geteuid", "getgid", "getegid"):
    if hasattr(os, _name):
        delattr(os, _name)

sys.modules["fcntl"] = None  # type: ignore[assignment]
sys.modules["resource"] = None  # type: ignore[assignment]

for _name in list(vars(socket)):
    if _name.startswith(("AF_UNIX", "SCM_", "CMSG_", "SOCK_NONBLOCK", "SOCK_CLOEXEC",
                         "TCP_CONGESTION", "TCP_CORK", "TCP_USER_TIMEOUT", "SO_REUSEPORT",
                         "IP_MINTTL", "SO_PEERCRED")) or _name in ("send_fds", "recv_fds"):
        delattr(socket, _name)


def _tcp_socketpair(family=socket.AF_INET, type=socket.SOCK_STREAM, proto=0):
    """Two connected TCP sockets on 127.0.0.1: what Windows gives for socketpair()."""
    with socket.socket(socket.AF_INET, type, proto) as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        a = socket.socket(socket.AF_INET, type, proto)
        try:
            a.connect(lsock.getsockname())
            b, _ = lsock.accept()
        except BaseException:
            a.close()
            raise
    return a, b


socket.socketpair = _tcp_socketpair

import signal  # noqa: E402

for _name in list(vars(signal)):
    if (_name.startswith("SIG") and not _name.startswith("SIG_")
            and _name not in ("SIGINT", "SIGTERM", "SIGABRT", "SIGFPE", "SIGILL", "SIGSEGV",
                              "SIGKILL")):
        delattr(signal, _name)  # SIGKILL stays: subprocess's Popen.kill() looks it up
for _name in ("pthread_sigmask", "pthread_kill", "sigwait", "sigwaitinfo", "sigtimedwait",
              "sigpending", "SIG_BLOCK", "SIG_UNBLOCK", "SIG_SETMASK", "setitimer",
              "getitimer", "alarm", "pause", "siginterrupt"):
    if hasattr(signal, _name):
        delattr(signal, _name)
