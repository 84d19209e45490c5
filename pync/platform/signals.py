"""Signals: what ends pync cleanly, and the steps a signal must not cut in half.

SIGTERM and SIGHUP unwind like ^C (``Terminated``), so sockets, socket
files and children are cleaned up by the modes' ``finally`` blocks.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional

# Signals that end pync as ^C does, with 128 + their number (where they exist).
TERMINATING = ("SIGTERM", "SIGHUP", "SIGBREAK")


class Terminated(BaseException):
    """Raised by the SIGTERM/SIGHUP handler so cleanup code runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class SignalsDeferred:
    """``with SignalsDeferred():`` holds SIGINT, SIGTERM and SIGHUP until the
    block ends, then they are delivered (and raise) as usual.

    For steps that must not be cut in half: a fork and the bookkeeping of
    its pid, a socket file and the arming of its cleanup.  Where signals
    cannot be blocked (Windows: no pthread_sigmask) the block runs as it is:
    there is no fork there, nor a UNIX socket file to clean up.
    """

    def __enter__(self) -> SignalsDeferred:
        import signal

        self._old = None
        if hasattr(signal, "pthread_sigmask"):  # POSIX; SIGALRM: a signal raised again
            self._old = signal.pthread_sigmask(  # type: ignore[attr-defined,unused-ignore]
                signal.SIG_BLOCK,  # type: ignore[attr-defined,unused-ignore]
                _ending_signals(signal) | {signal.SIGALRM})  # type: ignore[attr-defined,unused-ignore]
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._old is not None:
            signal.pthread_sigmask(  # type: ignore[attr-defined,unused-ignore]
                signal.SIG_SETMASK, self._old)  # type: ignore[attr-defined,unused-ignore]


def _ending_signals(signal: Any) -> set[int]:
    """^C and the signals that end pync like it, those this platform has."""
    return {getattr(signal, name) for name in ("SIGINT", *TERMINATING) if hasattr(signal, name)}


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


_pending: list[BaseException] = []  # a signal's exception a finalizer swallowed
_in_hook = False  # _redeliver runs: an alarm now would be swallowed again


def _redeliver(unraisable: Any) -> None:
    """sys.unraisablehook: a ^C or SIGTERM that came while a finalizer
    ran (a ``__del__``, such as Popen's) cannot unwind from there: Python
    would print "Exception ignored ... Traceback" and go on as if nothing
    came.  Its exception is raised again 1 ms later by SIGALRM's handler
    instead, from the code that can unwind (a signal sent from here would be
    handled inside this hook, and lost again)."""
    global _in_hook
    import signal
    import sys

    exc = unraisable.exc_value
    if isinstance(exc, (Terminated, KeyboardInterrupt)) and hasattr(signal, "setitimer"):
        _in_hook = True
        _pending[:] = [exc]
        signal.signal(signal.SIGALRM, _raise_pending)  # type: ignore[attr-defined,unused-ignore]
        _arm(signal)
        _in_hook = False  # (no call after the timer's: nothing runs a handler here)
        return
    sys.__unraisablehook__(unraisable)


def _arm(signal: Any) -> None:
    signal.setitimer(signal.ITIMER_REAL, 0.001)


def _raise_pending(signum: int, frame: object) -> None:
    if _in_hook:  # the alarm came before the hook returned: once it has
        import signal

        _arm(signal)
        return
    if _pending:
        exc = _pending.pop()
        raise type(exc)(*exc.args)


def restore_default_signals() -> Optional[BaseException]:
    """The session is over: ^C, SIGTERM and SIGHUP now end the process as
    they end any program, rather than raising into the interpreter's own
    shutdown (which would print "Exception ignored ... Traceback").

    Held while the handlers change, so a signal in between is delivered
    after, to the default action.  Returns the exception of a signal a
    finalizer swallowed and that was not raised again yet (its status is
    the process's), else None.
    """
    import signal

    with SignalsDeferred():
        for signum in _ending_signals(signal):
            signal.signal(signum, signal.SIG_DFL)
        if hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, 0)  # type: ignore[attr-defined,unused-ignore]
        return _pending.pop() if _pending else None


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP (and Windows' ^Break) unwind like ^C, so sockets
    and files are cleaned up."""
    import signal  # after parsing: ``pync -h`` does without it

    for name in TERMINATING:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _raise_terminated)
    import sys

    sys.unraisablehook = _redeliver
    from . import backend

    backend().watch_signals()
