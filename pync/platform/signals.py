"""Signals: what ends pync cleanly, and the steps a signal must not cut in half.

SIGTERM and SIGHUP unwind like ^C (``Terminated``), so sockets, socket
files and children are cleaned up by the modes' ``finally`` blocks.
"""

from __future__ import annotations


class Terminated(BaseException):
    """Raised by the SIGTERM/SIGHUP handler so cleanup code runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class SignalsDeferred:
    """``with SignalsDeferred():`` holds SIGINT, SIGTERM and SIGHUP until the
    block ends, then they are delivered (and raise) as usual.

    For steps that must not be cut in half: a fork and the bookkeeping of
    its pid, a socket file and the arming of its cleanup.
    """

    def __enter__(self) -> SignalsDeferred:
        import signal

        self._old = signal.pthread_sigmask(
            signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        signal.pthread_sigmask(signal.SIG_SETMASK, self._old)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind like ^C, so sockets and files are cleaned up."""
    import signal  # after parsing: ``pync -h`` does without it

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)
