"""Serial-line simulators: the paced pty/device/TCP link and the legacy ASCII devices."""
