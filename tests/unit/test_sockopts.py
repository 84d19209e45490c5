"""Socket options pync chooses itself: congestion control on this host."""

from __future__ import annotations

import socket

import pytest

from pync.platform import backend

unpaced_on_this_host = backend().unpaced

TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", None)


def _congestion(sock: socket.socket) -> bytes:
    return sock.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16).split(b"\0")[0]


@pytest.fixture
def loopback_pair():
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        client = socket.create_connection(lsock.getsockname())
        server, _ = lsock.accept()
    yield client, server
    client.close()
    server.close()


@pytest.mark.skipif(TCP_CONGESTION is None, reason="TCP_CONGESTION is Linux's")
def test_a_pacing_congestion_control_is_swapped_on_this_host(loopback_pair):
    """BBR paces with a timer per burst; between two ends on this host there
    is nothing to pace for: cubic (or reno) instead, on that socket only."""
    client, server = loopback_pair
    try:
        client.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, b"bbr")
    except OSError:
        pytest.skip("no BBR on this kernel")
    unpaced_on_this_host(client)
    assert _congestion(client) in (b"cubic", b"reno")
    server.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, b"reno")
    unpaced_on_this_host(server)
    assert _congestion(server) == b"reno"  # not pacing: left alone


def test_datagram_and_unix_sockets_are_left_alone():
    a, b = socket.socketpair()
    with a, b, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        unpaced_on_this_host(a)
        unpaced_on_this_host(udp)  # no error, nothing to do
