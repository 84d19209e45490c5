"""-C translation: examples, and chunking never changes the result."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from pync.protocols.crlf import CrlfTranslator


def reference(data: bytes) -> bytes:
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def test_examples():
    c = CrlfTranslator()
    assert c.feed(b"GET / HTTP/1.0\n\n") == b"GET / HTTP/1.0\r\n\r\n"
    assert c.feed(b"a\r\nb") == b"a\r\nb"
    assert c.feed(b"\r") == b"\r"
    assert c.feed(b"\n") == b"\n"  # completes the CRLF begun in the last chunk
    assert c.feed(b"") == b""


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8))
def test_split_points_do_not_matter(data, cuts):
    points = sorted({min(c, len(data)) for c in cuts})
    chunks, start = [], 0
    for p in [*points, len(data)]:
        chunks.append(data[start:p])
        start = p
    c = CrlfTranslator()
    assert b"".join(c.feed(x) for x in chunks) == reference(data)
