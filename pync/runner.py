"""run(): parse argv, pick the mode, turn every failure into a status.

This is the one place that catches errors: a PyncError becomes its message
and exit 1, ^C exits 130, SIGTERM/SIGHUP exit 128+signal — never a
traceback.  Cleanup (closing sockets, removing a UNIX socket file) happens in
the modes' ``finally`` blocks on every one of these paths.
"""

from __future__ import annotations

import signal
import sys
from typing import IO, Any, Optional

from .cli import InfoRequest, parse
from .report import PyncError, Reporter, strerror
from .session import SessionKit
from .streams import StdioStream, write_all


class Terminated(BaseException):
    """Raised by the SIGTERM/SIGHUP handler so cleanup code runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _fileno(stream: Optional[Any], default: int) -> int:
    if stream is None:
        return default
    return stream.fileno()


def run(argv: list[str], *, stdin: Optional[IO[Any]] = None,
        stdout: Optional[IO[Any]] = None, stderr: Optional[IO[str]] = None) -> int:
    """Run pync with argv (no program name); return the exit status.

    stdin/stdout may be any objects with a file descriptor (files, sockets,
    pipes); they default to the process's own fds 0 and 1.  Messages go to
    stderr (a text stream, default sys.stderr).
    """
    report = Reporter(stderr if stderr is not None else sys.stderr)
    out_fd = _fileno(stdout, 1)
    try:
        opts = parse(argv)
    except InfoRequest as info:
        write_all(out_fd, info.text.encode())
        return 0
    except PyncError as err:
        report.error(err)
        return 1
    report.verbose = opts.verbose
    in_fd = None if opts.no_stdin else _fileno(stdin, 0)
    from .connect import run_connect
    from .listen import run_listen
    from .scan import run_scan

    kit = None
    try:
        if opts.zero_io:
            return run_scan(opts, report)
        kit = SessionKit(StdioStream(in_fd, out_fd), opts, report)
        if opts.listen:
            return run_listen(opts, kit, report)
        return run_connect(opts, kit, report)
    except PyncError as err:
        report.error(err)
        return 1
    except OSError as exc:  # a system error no mode foresaw: one line, not a traceback
        report.warn(strerror(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Terminated as term:
        return 128 + term.signum
    finally:
        if kit is not None:
            kit.close()



def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind like ^C, so sockets and files are cleaned up."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)
