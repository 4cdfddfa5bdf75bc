"""Sans-I/O wire codecs: bytes in, values or bytes out; no sockets, no event loop."""
