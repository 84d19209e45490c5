"""--hex-dump format: exact lines, offsets per direction, every byte recoverable."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pync.protocols.hexdump import HexDumper

# hexdump -C (util-linux) printed these data lines for the same bytes.
HELLO = "00000000  68 65 6c 6c 6f 0a                                 |hello.|\n"
SIXTEEN = "00000000  30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  |0123456789abcdef|\n"


def test_partial_line():
    assert HexDumper().chunk(True, b"hello\n") == ("> 6 bytes sent\n" + HELLO).encode()


def test_exactly_sixteen_and_eight():
    assert HexDumper().chunk(False, b"0123456789abcdef") == (
        "< 16 bytes received\n" + SIXTEEN).encode()
    assert HexDumper().chunk(True, b"01234567") == (
        b"> 8 bytes sent\n"
        b"00000000  30 31 32 33 34 35 36 37                           |01234567|\n")
    assert HexDumper().chunk(True, b"012345678") == (
        b"> 9 bytes sent\n"
        b"00000000  30 31 32 33 34 35 36 37  38                       |012345678|\n")


def test_seventeen_bytes():
    assert HexDumper().chunk(True, b"0123456789abcdefg") == (
        "> 17 bytes sent\n" + SIXTEEN +
        "00000010  67                                                |g|\n").encode()


def test_non_printables_are_dots():
    data = bytes([0x00, 0x09, 0x0A, 0x1F, 0x20, 0x41, 0x7E, 0x7F, 0x80, 0xA0, 0xE9, 0xFF])
    assert HexDumper().chunk(False, data) == (
        b"< 12 bytes received\n"
        b"00000000  00 09 0a 1f 20 41 7e 7f  80 a0 e9 ff              |.... A~.....|\n")


def test_offsets_continue_per_direction():
    d = HexDumper()
    text = b"".join([
        d.chunk(True, b"hello\n"),
        d.chunk(False, b"hi\n"),
        d.chunk(True, b"0123456789abcdefg"),
        d.chunk(False, b"x"),
        d.chunk(True, b""),  # nothing at all for an empty chunk
    ])
    assert text.decode("ascii") == (
        "> 6 bytes sent\n"
        "00000000  68 65 6c 6c 6f 0a                                 |hello.|\n"
        "< 3 bytes received\n"
        "00000000  68 69 0a                                          |hi.|\n"
        "> 17 bytes sent\n"
        "00000006  30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  |0123456789abcdef|\n"
        "00000016  67                                                |g|\n"
        "< 1 byte received\n"
        "00000003  78                                                |x|\n"
    )


def test_data_lines_match_hexdump_c():
    # hexdump -C -v (no '*' squeezing) prints the same lines after its last offset line.
    hexdump = shutil.which("hexdump")
    if hexdump is None:
        pytest.skip("hexdump not installed")
    data = bytes(range(256)) + b"\x00" * 40 + b"tail|end"
    ref = subprocess.run([hexdump, "-C", "-v"], input=data, capture_output=True,
                         timeout=10, check=True).stdout
    mine = HexDumper().chunk(True, data)
    assert mine.split(b"\n", 1)[1] == ref.rsplit(b"\n", 2)[0] + b"\n"


MARKER = re.compile(r"([<>]) (\d+) bytes? (sent|received)\n")


def parse_line(line: str) -> tuple[int, bytes]:
    """One data line -> (offset, bytes), checking the fixed layout on the way."""
    assert line[8:10] == "  " and line[60] == "|" and line.endswith("|\n"), line
    offset = int(line[:8], 16)
    hexcol, text = line[10:60], line[61:-2]
    pairs = hexcol.split()
    assert all(re.fullmatch(r"[0-9a-f]{2}", p) for p in pairs), line
    row = bytes.fromhex("".join(pairs))
    assert 1 <= len(row) <= 16
    assert hexcol == f"{row[:8].hex(' ')}  {row[8:].hex(' ')}".strip().ljust(50), line
    assert text == "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in row)
    assert len(line) == 63 + len(row)  # 62 + k characters and the LF: 78 for a full line
    return offset, row


def parse(text: str) -> dict[bool, list[tuple[int, bytes]]]:
    """Read a dump back: per direction, (offset, bytes) of each chunk."""
    chunks: dict[bool, list[tuple[int, bytes]]] = {True: [], False: []}
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        m = MARKER.fullmatch(lines[i])
        assert m, lines[i]
        sent = m[1] == ">"
        assert (m[3] == "sent") == sent
        n = int(m[2])
        i += 1
        first, data = parse_line(lines[i])
        i += 1
        while len(data) < n:
            assert len(data) % 16 == 0  # only the last line of a chunk is short
            offset, row = parse_line(lines[i])
            assert offset == first + len(data)
            data += row
            i += 1
        assert len(data) == n
        chunks[sent].append((first, bytes(data)))
    return chunks


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=80)), max_size=8))
def test_every_byte_recoverable(session):
    d = HexDumper()
    text = b"".join(d.chunk(sent, data) for sent, data in session).decode("ascii")
    got = parse(text)
    for sent in (True, False):
        want = [data for s, data in session if s == sent and data]
        assert [data for _, data in got[sent]] == want
        offsets = [off for off, _ in got[sent]]
        assert offsets == [sum(map(len, want[:k])) for k in range(len(want))]
