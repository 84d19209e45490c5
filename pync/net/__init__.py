"""Sockets as nc sees them: ports and names, getaddrinfo with nc's words,
the socket options of the command line, UNIX-domain socket files."""
