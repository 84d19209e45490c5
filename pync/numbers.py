"""Integer parsing with the C library's strtonum() rules and words.

nc validates every numeric flag with OpenBSD's strtonum(), whose errors are
"invalid", "too small" and "too large"; pync reports the same words.
"""

from __future__ import annotations

import re

_INTEGER = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def strtonum(text: str, low: int, high: int) -> int:
    """Parse a whole decimal integer in [low, high].

    Raises ValueError whose message is "invalid", "too small" or "too large".
    """
    match = _INTEGER.fullmatch(text)
    if not match:
        raise ValueError("invalid")
    value = int(match.group(1))
    if value < low:
        raise ValueError("too small")
    if value > high:
        raise ValueError("too large")
    return value
