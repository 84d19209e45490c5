"""run(): parse argv, pick the mode, turn every failure into a status.

This is the one place that catches errors: a PyncError becomes its message
and exit 1, ^C exits 130, SIGTERM/SIGHUP exit 128+signal — never a
traceback.  Cleanup (closing sockets, removing a UNIX socket file) happens in
the modes' ``finally`` blocks on every one of these paths.
"""

from __future__ import annotations

import sys

from ..base.report import PyncError, Reporter, strerror, write_all
from ..platform.signals import Terminated, install_signal_handlers, restore_default_signals
from .localio import LocalIO
from .parse import InfoRequest, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Optional, Union

    from ..base.options import Options
    from ..modes.session import SessionKit


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
        # Only what a mode will read is opened: a bridge (platform/bridge.py)
        # would start reading stdin at once.
        local = not (opts.exec_argv or opts.zero_io or opts.serves_many)
        reads = local and not (opts.no_stdin or opts.recv_only)
        return _run_mode(opts, report, io.in_fd() if reads else None,
                         io.out_fd if local else None, argv)


def _run_mode(opts: Options, report: Reporter, in_fd: Optional[int],
              out_fd: Optional[int], argv: list[str]) -> int:
    """Run the mode the options ask for; every failure becomes a status."""
    from ..modes.connect import run_connect
    from ..modes.listen import run_listen
    from ..modes.scan import run_scan
    from ..modes.session import SessionKit
    from ..relay.streams import StdioStream

    def mode(kits: list[SessionKit]) -> int:
        if opts.zero_io:
            return run_scan(opts, report)
        if opts.forward:
            from ..modes.forward import run_forward
            return run_forward(opts, report)
        if opts.proxy_server:
            from ..modes.proxying import run_proxy_server
            return run_proxy_server(opts, report)
        stdio = StdioStream(in_fd, out_fd)
        try:
            kits.append(SessionKit(stdio, opts, report, argv))
        except BaseException:
            stdio.finish(flush=False)
            raise
        if opts.listen:
            return run_listen(opts, kits[0], report)
        return run_connect(opts, kits[0], report)

    return _guarded(opts, report, mode)


def serve_handed_over() -> int:
    """A spawned ``-l -k -e`` worker (modes/workers.py): serve the one
    connection it was handed, with the listener's command line; the exit
    status is the session's."""
    import json

    from ..base.record import replace
    from ..modes.listen import serve_connection
    from ..modes.session import SessionKit
    from ..platform import backend
    from ..relay.streams import StdioStream

    report = Reporter(sys.stderr)
    try:
        job = json.loads(sys.stdin.buffer.read())
        # Dump files are the listener's: each worker appends to them.
        opts = replace(parse(job["argv"]), append_output=True)
    except (ValueError, KeyError, TypeError, PyncError, InfoRequest):
        report.warn("not a worker's job")
        return 1
    install_signal_handlers()
    pem = job.get("tls_pem")

    def serve(kits: list[SessionKit]) -> int:
        conn = backend().adopt_socket(job["socket"])
        try:
            kits.append(SessionKit(StdioStream(None, None), opts, report, job["argv"],
                                   tls_pem=pem.encode("ascii") if pem else None))
        except BaseException:
            conn.close()
            raise
        return serve_connection(conn, job["where"], kits[0], opts, report)

    return _guarded(opts, report, serve)


def _guarded(opts: Options, report: Reporter, work: Callable[[list[SessionKit]], int]) -> int:
    """work(kits), where every failure becomes a status and the kit it made
    (if any) is closed: stdout written out, dumps closed."""
    report.verbose = opts.verbose
    kits: list[SessionKit] = []
    interrupted = False
    try:
        return work(kits)
    except PyncError as err:
        report.error(err)
        return 1
    except OSError as exc:  # a system error no mode foresaw: one line, not a traceback
        report.warn(strerror(exc))
        return 1
    except KeyboardInterrupt:
        interrupted = True
        return 130
    except Terminated as term:
        interrupted = True
        return 128 + term.signum
    finally:
        for kit in kits:
            kit.close(interrupted)


def main(argv: Optional[list[str]] = None) -> None:
    """The ``pync`` console script."""
    args = sys.argv[1:] if argv is None else argv
    exit_with(lambda: run(args, handle_signals=True))


def exit_with(work: Callable[[], int]) -> None:
    """Exit with work()'s status: the pync command and a spawned worker.

    A signal that comes once work() has returned, or while it unwinds
    outside a session, still gives its status and no traceback; then the
    signals get their default actions back for the interpreter's shutdown.
    """
    late: Optional[BaseException] = None
    try:
        status = work()
        late = restore_default_signals()
    except KeyboardInterrupt:  # ^C outside a session (e.g. while parsing)
        status = 130
        restore_default_signals()
    except Terminated as term:
        status = 128 + term.signum
        restore_default_signals()
    if late is not None:  # swallowed by a finalizer just before the end
        status = 128 + late.signum if isinstance(late, Terminated) else 130
    sys.exit(status)

