"""ASCII line-protocol driver (`protocol: serial-line`): a serial port or a TCP byte stream,
framed by terminator, start + terminator or fixed length, with optional checksums; request/
response groups (send a command, take one reply) and streaming groups (the device talks by
itself). pyserial is imported only when a machine actually opens a serial port."""
