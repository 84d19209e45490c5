"""run(): parse argv, pick the mode, turn every failure into a status.

This is the one place that catches errors: a PyncError becomes its message
and exit 1, ^C exits 130, SIGTERM/SIGHUP exit 128+signal — never a
traceback.  Cleanup (closing sockets, removing a UNIX socket file) happens in
the modes' ``finally`` blocks on every one of these paths.
"""

from __future__ import annotations

import sys

from ..base.report import PyncError, Reporter, strerror, write_all
from ..platform.signals import Terminated, install_signal_handlers
from .localio import LocalIO
from .parse import InfoRequest, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Optional, Union

    from ..base.options import Options


def run(argv: list[str], *, stdin: Union[bytes, IO[Any], None] = None,
        stdout: Optional[IO[Any]] = None, stderr: Optional[IO[str]] = None,
        handle_signals: bool = False) -> int:
    """Run pync with argv (no program name); return the exit status.

    ``stdin`` is pync's input: ``bytes``, or any object with a file
    descriptor (file, socket, pipe), or a readable object without one
    (``io.BytesIO``).  ``stdout`` is where received bytes go: an object with
    a descriptor, or a writable one without (``io.BytesIO``).  Both default
    to the process's own descriptors 0 and 1; objects without a descriptor
    are joined through a pipe by a thread, so any size goes through without
    deadlock.  Messages go to ``stderr`` (a text stream, default
    sys.stderr).  ``handle_signals``: SIGTERM and SIGHUP end pync as ^C
    does, cleaning up (the pync command sets it; it needs the main thread).
    """
    report = Reporter(stderr if stderr is not None else sys.stderr)
    with LocalIO(stdin, stdout) as io:
        try:
            opts = parse(argv)
        except InfoRequest as info:
            write_all(io.out_fd, info.text.encode())
            return 0
        except PyncError as err:
            report.error(err)
            return 1
        if handle_signals:
            install_signal_handlers()
        return _run_mode(opts, report, None if opts.no_stdin else io.in_fd(), io.out_fd)


def _run_mode(opts: Options, report: Reporter, in_fd: Optional[int], out_fd: int) -> int:
    """Run the mode the options ask for; every failure becomes a status."""
    report.verbose = opts.verbose
    from ..modes.connect import run_connect
    from ..modes.listen import run_listen
    from ..modes.scan import run_scan
    from ..modes.session import SessionKit
    from ..relay.streams import StdioStream

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


def main(argv: Optional[list[str]] = None) -> None:
    """The ``pync`` console script."""
    try:
        status = run(sys.argv[1:] if argv is None else argv, handle_signals=True)
    except KeyboardInterrupt:  # ^C outside a session (e.g. while parsing)
        status = 130
    sys.exit(status)

