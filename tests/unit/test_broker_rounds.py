"""The broker's batched fan-out gives every client what one-by-one delivery would.

The broker queues what is said in one turn of its loop as a round and hands
each client the round less its own bytes and less what came before it
joined (modes/broker.py).  Here a Broker runs on socket pairs, driven by
hypothesis through joins, lines, stdin, leaves, ends of turns and a round
size small enough to be cut early; each client's peer must read exactly
what a model that delivers every piece at once, to everyone then present
but its sender, says: every byte once, in order, nothing from before it
joined, nothing of its own.
"""

from __future__ import annotations

import io
import select
import socket
import threading
import time
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from pynctest import TIMEOUT

from pync.base.options import Options
from pync.base.report import Reporter
from pync.modes import broker
from pync.modes.access import AccessList


class FakeStdio:
    """pync's own stdio for the broker: no stdin, stdout kept in memory."""

    read_fd = None
    write_fd = 1
    always_ready: frozenset[int] = frozenset()

    def __init__(self) -> None:
        self.written = bytearray()

    def write_all(self, data: bytes) -> bool:
        self.written += data
        return True


class Room:
    """A Broker on a listener nobody connects to, its clients socket pairs
    made by join(); with it closes everything."""

    def __init__(self, opts: Options, stdio: FakeStdio | None = None,
                 said: io.StringIO | None = None) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.stdio = stdio or FakeStdio()
        self.broker = broker.Broker(self.listener, opts, self.stdio,  # type: ignore[arg-type]
                                    Reporter(said or io.StringIO(), verbose=1), AccessList())
        self.pairs: list[tuple[socket.socket, socket.socket]] = []

    def join(self) -> tuple[broker.Client, socket.socket]:
        """A new client: the broker's Client, and the test's end of it."""
        mine, theirs = socket.socketpair()
        self.pairs.append((mine, theirs))
        return self.broker._join(mine, "test"), theirs

    def __enter__(self) -> Room:
        return self

    def __exit__(self, *_: object) -> None:
        for mine, theirs in self.pairs:
            mine.close()
            theirs.close()
        self.broker.waiter.close()
        self.listener.close()


def read_all(s: socket.socket) -> bytes:
    """What is waiting on s, up to its end if it has ended."""
    s.setblocking(False)
    got = bytearray()
    while True:
        try:
            chunk = s.recv(65536)
        except BlockingIOError:
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk


action = st.one_of(
    st.tuples(st.just("join")),
    st.tuples(st.just("say"), st.integers(0, 7), st.binary(min_size=1, max_size=48)),
    st.tuples(st.just("stdin"), st.binary(min_size=1, max_size=48)),
    st.tuples(st.just("leave"), st.integers(0, 7)),
    st.tuples(st.just("turn")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(action, min_size=1, max_size=40), st.sampled_from([1, 24, 100, 1 << 18]))
def test_rounds_deliver_what_one_by_one_delivery_would(actions, round_bytes):
    peers: list[socket.socket] = []      # the test's end of each client
    clients: list[broker.Client] = []    # the broker's Client for each
    present: list[bool] = []
    want: list[bytearray] = []           # the model: what each peer must read
    shown = bytearray()                  # and what stdout must show
    with Room(Options(broker=True)) as r, mock.patch.object(broker, "ROUND_BYTES", round_bytes):
        room = r.broker
        for act in actions:
            if act[0] == "join":
                client, peer = r.join()
                clients.append(client)
                peers.append(peer)
                present.append(True)
                want.append(bytearray())
                continue
            if act[0] == "turn":
                room._fan_out()
                continue
            if act[0] == "stdin":
                room._deliver(act[1], to_stdout=False)
                for i, here in enumerate(present):
                    if here:
                        want[i] += act[1]
                continue
            live = [i for i, here in enumerate(present) if here]
            if not live:
                continue
            who = live[act[1] % len(live)]
            if act[0] == "leave":
                room._drop(clients[who])
                present[who] = False
                continue
            room._from_client(clients[who], act[2])
            shown += act[2]
            for i, here in enumerate(present):
                if here and i != who:
                    want[i] += act[2]
        room._fan_out()
        for i, peer in enumerate(peers):
            assert read_all(peer) == bytes(want[i]), f"client {i}"
        assert bytes(r.stdio.written) == bytes(shown)


def test_a_thousand_lines_in_one_turn_take_one_send_per_client():
    """Ten clients each say 100 lines in one turn: each client's socket is
    sent to once (the round), and gets the other 900 lines in order."""
    with Room(Options(broker=True)) as r:
        room = r.broker
        joined = [r.join() for _ in range(10)]
        sends = 0
        real_flush = room._flush

        def counted(client: broker.Client) -> None:
            nonlocal sends
            sends += 1
            real_flush(client)
        with mock.patch.object(room, "_flush", counted):
            for n in range(100):
                for i, (client, _) in enumerate(joined):
                    room._from_client(client, b"%d says %03d\n" % (i, n))
            room._fan_out()
        assert sends == len(joined)
        for i, (_, peer) in enumerate(joined):
            want = b"".join(b"%d says %03d\n" % (j, n) for n in range(100)
                            for j in range(10) if j != i)
            assert read_all(peer) == want


def test_leavers_unfinished_lines_do_not_drop_a_reader():
    """--chat: four stalled clients, each holding 64 KiB of an unfinished line
    of control bytes (256 KiB once escaped), are dropped in one fan-out; the
    1 MiB their lines make reaches a client that reads, in passes of about
    ROUND_BYTES, without dropping it as "not reading"."""
    said = io.StringIO()
    with Room(Options(chat=True), said=said) as r:
        room = r.broker
        (reader, reader_peer), (talker, _), *stalled = [r.join() for _ in range(6)]
        got = bytearray()
        drain = threading.Thread(target=lambda: got.extend(recv_to_end(reader_peer)))
        drain.start()
        room._fan_out()
        for client, _ in stalled:
            room._from_client(client, b"\x01" * 65536)  # held: no newline yet
            client.out += b"x" * (broker.MAX_BACKLOG - 10)  # it does not read
        room._from_client(talker, b"hi\n")
        room._fan_out()
        assert reader.fd in room.clients, said.getvalue()
        assert said.getvalue().count("not reading") == len(stalled)
        deadline = time.monotonic() + TIMEOUT
        while reader.out and time.monotonic() < deadline:  # (the loop's EVENT_WRITE)
            select.select([], [reader.sock], [], TIMEOUT)
            room._flush(reader)
        reader.sock.close()
        drain.join(TIMEOUT)
        assert got.count(b"\\x01" * 65536) == len(stalled)  # each leaver's line, whole
        assert got.count(b"has left\n") == len(stalled)


def recv_to_end(s: socket.socket) -> bytes:
    """Everything s receives until its peer closes."""
    s.settimeout(TIMEOUT)
    got = bytearray()
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            return bytes(got)
        got += chunk
