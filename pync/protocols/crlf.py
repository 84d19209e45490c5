"""-C: line endings sent as CRLF (sans-I/O, fed chunk by chunk).

Every LF not already preceded by CR becomes CRLF, so CRLF input passes
unchanged.  The byte before each chunk is remembered, so a CR at the end of
one read and an LF at the start of the next stay one CRLF (nc's drainbuf
forgets it and sends CR CR LF there).
"""

from __future__ import annotations


class CrlfTranslator:
    """Feed bytes in, get the translated bytes out."""

    def __init__(self) -> None:
        self._last = b""

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        out = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        # A lone LF at the start after a CR that ended the previous chunk
        # was already half of a CRLF: drop the CR the replace added.
        if self._last == b"\r" and data[:1] == b"\n":
            out = out[1:]
        self._last = data[-1:]
        return out
