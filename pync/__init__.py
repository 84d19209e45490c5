"""pync: netcat in pure Python, a drop-in for OpenBSD nc.

Library use::

    import pync
    status = pync.run(["-N", "example.org", "80"])

``run`` takes the argv pync would get (without the program name) and returns
the exit status; it never raises for bad input and never calls sys.exit.
"""

__version__ = "0.1.0"

__all__ = ["Options", "__version__", "run"]


def __getattr__(name: str) -> object:
    """Import ``run`` and ``Options`` on first use: ``pync -h`` stays fast."""
    if name == "run":
        from .cli.run import run
        return run
    if name == "Options":
        from .base.options import Options
        return Options
    raise AttributeError(f"module 'pync' has no attribute {name!r}")
