"""The one event loop that joins two ends of a session, with its Streams
(stdio, sockets, datagrams, TLS) and bounded buffers.  It knows no mode and
no command line: a mode gives it two Streams and a RelayConfig."""
