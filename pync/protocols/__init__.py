"""Protocols as sans-I/O state machines and pure functions: proxy
handshakes, telnet negotiation, hex dumps, CRLF.  Fed bytes, they return
bytes; they import nothing of pync's I/O and are tested without sockets."""
