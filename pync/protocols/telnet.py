"""-t: answer telnet negotiation and strip it from the data (sans-I/O).

Fed the bytes read from the network, chunk by chunk, :class:`TelnetFilter`
returns the data meant for stdout and the replies to send back.

Replies are the ones OpenBSD nc's ``atelnet()`` sends, refusing every option:

- ``IAC DO x`` and ``IAC DONT x`` are answered ``IAC WONT x``;
- ``IAC WILL x`` and ``IAC WONT x`` are answered ``IAC DONT x``.

Each request is answered, a repeated one too, as nc does (nc 1.219 answers
``IAC DO 1 IAC DO 1`` with two ``IAC WONT 1``).

Where pync does better than nc:

- the telnet commands are removed from the data that reaches stdout:
  ``IAC IAC`` becomes one 0xFF byte; ``IAC DO/DONT/WILL/WONT x`` (3 bytes)
  and every other two-byte ``IAC`` command (NOP, GA, DM, AYT, ..., and
  ``IAC`` followed by a byte that is not a command) are dropped;
  ``IAC SB ... IAC SE`` subnegotiation is dropped whole: inside it only
  ``IAC SE`` ends it, and ``IAC IAC`` or ``IAC`` with any other byte is part
  of it;
- a sequence split across reads is recognised (nc only sees sequences
  whole inside one read): the filter keeps its state between feeds.

Memory is bounded whatever the peer sends: subnegotiation content is
discarded as it arrives, never held, so only a few bytes of state live
between feeds however long an SB lasts.  At end of stream a sequence still
incomplete (a lone ``IAC``, ``IAC DO`` without its option, an SB never
ended) is dropped: there is nothing to flush.
"""

from __future__ import annotations

IAC = 255
DONT = 254
DO = 253
WONT = 252
WILL = 251
SB = 250
SE = 240

_IAC_BYTE = b"\xff"

# Where the parser stands between two bytes (and between two feeds).
_DATA = 0  # plain data
_CMD = 1  # after IAC
_OPT = 2  # after IAC DO/DONT/WILL/WONT, waiting for the option byte
_SB = 3  # inside IAC SB ..., discarding
_SB_IAC = 4  # inside SB, after an IAC


class TelnetFilter:
    """Feed network bytes in; get (data for stdout, replies for the network)."""

    def __init__(self) -> None:
        self._state = _DATA
        self._verb = 0  # the DO/DONT/WILL/WONT awaiting its option

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Bytes read from the network -> (data for stdout, replies to send to the network)."""
        state = self._state
        if state == _DATA and IAC not in data:
            return bytes(data), b""
        out = bytearray()
        replies = bytearray()
        i, n = 0, len(data)
        while i < n:
            if state in (_DATA, _SB):
                j = data.find(_IAC_BYTE, i)
                if j < 0:
                    if state == _DATA:
                        out += data[i:]
                    break
                if state == _DATA:
                    out += data[i:j]
                    state = _CMD
                else:
                    state = _SB_IAC
                i = j + 1
                continue
            b = data[i]
            i += 1
            if state == _CMD:
                if b == IAC:
                    out.append(IAC)
                    state = _DATA
                elif DONT >= b >= WILL:
                    self._verb = b
                    state = _OPT
                elif b == SB:
                    state = _SB
                else:
                    state = _DATA
            elif state == _OPT:
                answer = DONT if self._verb in (WILL, WONT) else WONT
                replies += bytes((IAC, answer, b))
                state = _DATA
            else:  # _SB_IAC
                state = _DATA if b == SE else _SB
        self._state = state
        return bytes(out), bytes(replies)
