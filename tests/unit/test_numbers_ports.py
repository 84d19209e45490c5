"""Ports, ranges and strtonum: examples and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pync.base.numbers import strtonum
from pync.base.report import PyncError
from pync.net.addr import parse_port, parse_ports


def test_strtonum_words():
    assert strtonum(" 42", 0, 100) == 42
    assert strtonum("+7", 0, 100) == 7
    for text, word in [("abc", "invalid"), ("1.5", "invalid"), ("", "invalid"),
                       ("-1", "too small"), ("101", "too large"), ("4 ", "invalid")]:
        with pytest.raises(ValueError, match=word):
            strtonum(text, 0, 100)


@given(st.integers(1, 65535), st.integers(1, 65535))
def test_ranges_in_either_order(a, b):
    lo, hi = min(a, b), max(a, b)
    if hi - lo > 2000:
        hi = lo + 2000
        a, b = (lo, hi) if a <= b else (hi, lo)
    assert parse_ports([f"{a}-{b}"]) == list(range(lo, hi + 1))


@given(st.integers(65536, 10**12))
def test_too_large(n):
    with pytest.raises(PyncError, match=f"port number too large: {n}"):
        parse_port(str(n))


@given(st.text(max_size=12))
def test_arbitrary_text_is_a_port_or_a_clean_error(text):
    try:
        ports = parse_ports([text])
    except PyncError as exc:
        assert exc.message.startswith("port number ")
    else:
        assert all(1 <= p <= 65535 for p in ports)


def test_services_and_lists():
    assert parse_ports(["http", "22", "https"]) == [80, 22, 443]
    assert parse_port("0", low=0) == 0
