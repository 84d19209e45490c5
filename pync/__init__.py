"""pync: netcat in pure Python, a drop-in for OpenBSD nc.

Library use::

    import pync
    status = pync.run(["-N", "example.org", "80"])

``run`` takes the argv pync would get (without the program name) and returns
the exit status; it never raises for bad input and never calls sys.exit.
"""

__version__ = "0.1.0"

from .options import Options
from .runner import run

__all__ = ["Options", "__version__", "run"]
