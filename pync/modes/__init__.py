"""What pync does with its sockets: connect, listen, scan, broker, exec, and
the session between the two ends of a connection (TLS, proxies, access
lists included).  Each mode opens sockets and hands two Streams to the relay."""
