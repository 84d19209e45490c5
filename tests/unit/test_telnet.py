"""-t telnet filter: nc's replies, negotiation stripped, chunking never matters."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pync.protocols.telnet import TelnetFilter

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
NOP, DM, GA = 241, 242, 249


def feed_all(chunks) -> tuple[bytes, bytes]:
    f = TelnetFilter()
    outs, replies = zip(*(f.feed(c) for c in chunks)) if chunks else ((), ())
    return b"".join(outs), b"".join(replies)


def test_replies_measured_from_nc():
    # Measured from OpenBSD nc 1.219 (Debian 1.219-1): `nc -t 127.0.0.1 PORT </dev/null`
    # against a server on 127.0.0.1 that sent ff fd 01 ff fb 03 "hello\n"
    # (IAC DO ECHO, IAC WILL SGA, text); nc wrote back ff fc 01 ff fe 03.
    nc_replies = bytes.fromhex("fffc01fffe03")
    out, replies = TelnetFilter().feed(bytes([IAC, DO, 1, IAC, WILL, 3]) + b"hello\n")
    assert replies == nc_replies
    assert out == b"hello\n"  # nc passes the negotiation to stdout; pync strips it


def test_every_request_answered_like_nc():
    # Also measured from nc 1.219: data before the commands, DONT and WONT, IAC IAC,
    # a NOP, and the same DO twice (answered twice).
    data = b"hi " + bytes([IAC, DONT, 5, IAC, WONT, 7, IAC, IAC, IAC, NOP]) + b"x"
    data += bytes([IAC, DO, 1, IAC, DO, 1])
    out, replies = TelnetFilter().feed(data)
    assert replies == bytes.fromhex("fffc05 fffe07 fffc01 fffc01")
    assert out == b"hi \xffx"


def test_each_verb():
    f = TelnetFilter()
    assert f.feed(bytes([IAC, DO, 24])) == (b"", bytes([IAC, WONT, 24]))
    assert f.feed(bytes([IAC, DONT, 24])) == (b"", bytes([IAC, WONT, 24]))
    assert f.feed(bytes([IAC, WILL, 1])) == (b"", bytes([IAC, DONT, 1]))
    assert f.feed(bytes([IAC, WONT, 1])) == (b"", bytes([IAC, DONT, 1]))
    # The option byte may be anything, IAC included.
    assert f.feed(bytes([IAC, DO, IAC]) + b"a") == (b"a", bytes([IAC, WONT, IAC]))


def test_escaped_iac_is_one_data_byte():
    f = TelnetFilter()
    assert f.feed(b"a\xff\xffb") == (b"a\xffb", b"")
    assert f.feed(b"\xff\xff\xff\xff") == (b"\xff\xff", b"")


def test_two_byte_commands_stripped():
    f = TelnetFilter()
    data = b"a" + bytes([IAC, NOP, IAC, GA, IAC, DM, IAC, SE, IAC, 0x41]) + b"b"
    assert f.feed(data) == (b"ab", b"")


def test_subnegotiation_stripped():
    f = TelnetFilter()
    # IAC SB TTYPE SEND IAC SE
    assert f.feed(b"x" + bytes([IAC, SB, 24, 1, IAC, SE]) + b"y") == (b"xy", b"")
    # IAC IAC and other IAC pairs inside SB belong to the SB: no data, no reply.
    sb = bytes([IAC, SB, 24, IAC, IAC, IAC, DO, 1, 0xFF, 0xFF, 7, IAC, SE])
    assert f.feed(sb + b"z") == (b"z", b"")


def test_split_sequences_held_until_next_feed():
    f = TelnetFilter()
    assert f.feed(b"ab\xff") == (b"ab", b"")
    assert f.feed(bytes([DO])) == (b"", b"")
    assert f.feed(bytes([24]) + b"z") == (b"z", bytes([IAC, WONT, 24]))
    assert f.feed(b"\xff") == (b"", b"")
    assert f.feed(b"\xff") == (b"\xff", b"")
    assert f.feed(bytes([IAC, SB, 24, 0, IAC])) == (b"", b"")
    assert f.feed(bytes([SE]) + b"q") == (b"q", b"")
    assert f.feed(b"") == (b"", b"")


def test_endless_subnegotiation_holds_no_data():
    f = TelnetFilter()
    assert f.feed(bytes([IAC, SB, 24])) == (b"", b"")
    junk = bytes(range(255)) * 257  # no IAC: never ends the SB
    for _ in range(64):  # 4 MiB of it
        assert f.feed(junk) == (b"", b"")
    # Only the parser state lives between feeds, never the SB's bytes.
    assert all(isinstance(v, int) for v in vars(f).values())
    assert f.feed(bytes([IAC, SE]) + b"ok") == (b"ok", b"")


def test_partial_sequence_at_eof_is_dropped():
    # There is no flush: what a feed did not return is never returned.
    for tail in (b"\xff", bytes([IAC, WILL]), bytes([IAC, SB, 1, 2, 3])):
        assert feed_all([b"data", tail]) == (b"data", b"")


# Bytes that make telnet structure likely, mixed with arbitrary bytes.
TOKENS = st.one_of(
    st.binary(max_size=6),
    st.sampled_from([bytes([IAC]), bytes([IAC, IAC]), bytes([IAC, DO]), bytes([IAC, WILL]),
                     bytes([IAC, WONT, 3]), bytes([IAC, DONT, 5]), bytes([IAC, SB]),
                     bytes([IAC, SE]), bytes([IAC, NOP]), bytes([SE]), bytes([DO])]),
)
TELNETISH = st.lists(TOKENS, max_size=30).map(b"".join)


def reference(data: bytes) -> tuple[bytes, bytes]:
    """A plain byte-at-a-time reading of the rules, for comparison."""
    out, replies = bytearray(), bytearray()
    i, n = 0, len(data)
    while i < n:
        if data[i] != IAC:
            out.append(data[i])
            i += 1
        elif i + 1 >= n:
            break
        elif data[i + 1] == IAC:
            out.append(IAC)
            i += 2
        elif data[i + 1] in (DO, DONT, WILL, WONT):
            if i + 2 >= n:
                break
            replies += bytes([IAC, DONT if data[i + 1] in (WILL, WONT) else WONT, data[i + 2]])
            i += 3
        elif data[i + 1] == SB:
            end = i + 2
            while end < n and not (data[end] == IAC and end + 1 < n and data[end + 1] == SE):
                end += 2 if data[end] == IAC else 1
            i = end + 2
        else:
            i += 2
    return bytes(out), bytes(replies)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    chunks, start = [], 0
    for p in [*points, len(data)]:
        chunks.append(data[start:p])
        start = p
    return chunks


@settings(max_examples=150, deadline=None)
@given(st.one_of(TELNETISH, st.binary(max_size=200)), st.lists(st.integers(0, 200), max_size=10))
def test_split_points_do_not_matter(data, cuts):
    whole = TelnetFilter().feed(data)
    assert feed_all(split(data, cuts)) == whole
    assert feed_all([data[i:i + 1] for i in range(len(data))]) == whole
    assert whole == reference(data)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_never_raise(chunks):
    f = TelnetFilter()
    for c in chunks:
        out, replies = f.feed(c)
        assert isinstance(out, bytes) and isinstance(replies, bytes)
        assert len(out) <= len(c)
        assert len(replies) % 3 == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=100).map(lambda b: b.replace(b"\xff", b"")), max_size=6))
def test_plain_data_passes_untouched(chunks):
    f = TelnetFilter()
    for c in chunks:
        out, replies = f.feed(c)
        assert out == c and len(out) == len(c)
        assert replies == b""
