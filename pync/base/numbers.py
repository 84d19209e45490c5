"""Integer parsing with the C library's strtonum() rules and words.

nc validates every numeric flag with OpenBSD's strtonum(), whose errors are
"invalid", "too small" and "too large"; pync reports the same words.
"""

from __future__ import annotations

_SPACE = " \t\n\v\f\r"  # what strtoll() skips before the number
_DIGITS = frozenset("0123456789")


def strtonum(text: str, low: int, high: int) -> int:
    """Parse a whole decimal integer in [low, high].

    Raises ValueError whose message is "invalid", "too small" or "too large".
    """
    number = text.lstrip(_SPACE)
    digits = number[1:] if number[:1] in ("+", "-") else number
    if not digits or not _DIGITS.issuperset(digits):
        raise ValueError("invalid")
    value = int(number)
    if value < low:
        raise ValueError("too small")
    if value > high:
        raise ValueError("too large")
    return value
