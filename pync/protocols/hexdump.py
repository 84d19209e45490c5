"""--hex-dump FILE: a hex dump of the data in both directions (sans-I/O).

:class:`HexDumper` turns each chunk of data into ASCII text; the caller
writes that text to the dump file.  The format, for a session that sends
``hello\\n`` and receives ``hi\\n``, then sends 17 more bytes::

    > 6 bytes sent
    00000000  68 65 6c 6c 6f 0a                                 |hello.|
    < 3 bytes received
    00000000  68 69 0a                                          |hi.|
    > 17 bytes sent
    00000006  30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  |0123456789abcdef|
    00000016  67                                                |g|

Each chunk is one marker line, then its data lines:

- the marker is ``> N bytes sent`` for data sent to the network, or
  ``< N bytes received`` for data read from it (``1 byte`` when N is 1);
- a data line holds up to 16 bytes of the chunk: the offset, eight or more
  lowercase hex digits, counted per direction from the first byte of the
  session in that direction (so offsets continue across chunks and a
  chunk's lines start at its own offset, not at a multiple of 16); two
  spaces; the bytes as two hex digits each, separated by one space, with
  one extra space after the eighth; the hex column padded with spaces so
  that the ``|`` opening the ASCII column is always at column 60; then the
  bytes again between ``|`` bars, 0x20-0x7e as themselves, every other
  byte (controls, 0x7f, 0x80-0xff) as ``.``.

That is ``hexdump -C``'s line layout, except that repeated lines are never
squeezed into ``*``: every byte appears.  A full line is 78 characters, a
line of k < 16 bytes is 62 + k; lines end with LF.  An empty chunk gives
no text at all.  Offsets past 4 GiB simply grow a ninth digit.
"""

from __future__ import annotations

# Printable ASCII stays, everything else becomes '.'.
_ASCII = bytes(b if 0x20 <= b < 0x7F else 0x2E for b in range(256))

WIDTH = 16  # bytes per line


def _line(offset: int, row: bytes) -> str:
    hexes = row[:8].hex(" ")
    if len(row) > 8:
        hexes += "  " + row[8:].hex(" ")
    text = row.translate(_ASCII).decode("ascii")
    return f"{offset:08x}  {hexes:<48}  |{text}|\n"


class HexDumper:
    """Format chunks of a session as hex dump text, offsets kept per direction."""

    def __init__(self) -> None:
        self.sent = 0  # bytes dumped so far in each direction
        self.received = 0

    def chunk(self, sent: bool, data: bytes) -> bytes:
        """The dump text (ASCII bytes) for one chunk; sent=True: to the network, False: from it."""
        n = len(data)
        if not n:
            return b""
        data = bytes(data)
        if sent:
            start = self.sent
            self.sent += n
            marker = "> "
            verb = "sent"
        else:
            start = self.received
            self.received += n
            marker = "< "
            verb = "received"
        lines = [f"{marker}{n} {'byte' if n == 1 else 'bytes'} {verb}\n"]
        lines.extend(_line(start + i, data[i:i + WIDTH]) for i in range(0, n, WIDTH))
        return "".join(lines).encode("ascii")
