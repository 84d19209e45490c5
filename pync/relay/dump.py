"""-o FILE and --hex-dump FILE: a record of what crossed the connection.

``-o`` (ncat's ``--output``) writes the raw bytes of both directions, in
the order they passed; ``--hex-dump`` writes the same as a hex dump with a
direction marker per chunk (format in hexdump.py).  The files are
truncated when the session starts unless ``--append-output``.  Bytes are
recorded as they cross the socket: after -C's translation for what is
sent, before -t's filtering for what is received; under TLS, the
plaintext.
"""

from __future__ import annotations

import os

from ..base.report import PyncError, strerror, write_all
from ..platform.base import O_BINARY
from ..protocols.hexdump import HexDumper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


class SessionDump:
    """The open dump files; ``record`` is the relay's hook."""

    def __init__(self, raw: Optional[str], hexed: Optional[str], append: bool) -> None:
        # Not inherited (PEP 446); untranslated on Windows (O_BINARY).
        flags = os.O_WRONLY | os.O_CREAT | O_BINARY
        flags |= os.O_APPEND if append else os.O_TRUNC
        self.raw_fd: Optional[int] = None
        self.hex_fd: Optional[int] = None
        self.hex = HexDumper()
        try:
            if raw:
                self.raw_fd = _open(raw, flags)
            if hexed:
                self.hex_fd = _open(hexed, flags)
        except PyncError:
            self.close()
            raise

    def record(self, sent: bool, data: bytes) -> None:
        if self.raw_fd is not None:
            write_all(self.raw_fd, data)  # a full disk ends the record, not the session
        if self.hex_fd is not None:
            write_all(self.hex_fd, self.hex.chunk(sent, data))

    def close(self) -> None:
        for fd in (self.raw_fd, self.hex_fd):
            if fd is not None:
                os.close(fd)
        self.raw_fd = self.hex_fd = None


def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags, 0o666)
    except (OSError, ValueError) as exc:
        raise PyncError(f"{path}: {strerror(exc)}") from None

