"""Serial line parameters and the timing they give a simulated RS-232/RS-485 line.

A pty (or a socket) moves bytes instantly; a serial line does not. With ``LineSettings`` the
character time is ``c = (1 start + data bits + 1 parity bit unless parity N + stop bits) / baud``
(10 bits at 8N1, 11 at 8E1); ``simulators.serial.port.LinePort`` paces a conversation with it.
Servers answer a request at ``rx_line_end + turnaround (+ injected delay)``. The default
turnaround is 1 ms at >= 19200 baud, else 3.5 character times. The inter-frame silence is 3.5
character times, fixed at 1.75 ms above 19200 baud (Modbus over serial line v1.02, 2.5.1.1).
"""

from __future__ import annotations

from dataclasses import dataclass

PARITIES = ("N", "E", "O", "M", "S")
STOPBITS = (1.0, 1.5, 2.0)
BYTESIZES = (5, 6, 7, 8)
# Above this baud rate the Modbus spec fixes the inter-frame silence instead of 3.5 chars.
FIXED_TIMING_BAUD = 19200
FIXED_INTERFRAME_S = 0.00175
DEFAULT_FAST_TURNAROUND_S = 0.001


@dataclass(frozen=True)
class LineSettings:
    """Serial line parameters; on a pty/socket they only drive the simulated timing."""

    baud: int = 19200
    bytesize: int = 8
    parity: str = "E"
    stopbits: float = 1.0
    turnaround_s: float | None = None  # None: 1 ms at >= 19200 baud, else 3.5 chars

    def __post_init__(self) -> None:
        if self.baud <= 0:
            raise ValueError("baud must be > 0")
        if self.bytesize not in BYTESIZES:
            raise ValueError("bytesize must be 5, 6, 7 or 8")
        if self.parity not in PARITIES:
            raise ValueError("parity must be one of N, E, O, M, S")
        if float(self.stopbits) not in STOPBITS:
            raise ValueError("stopbits must be 1, 1.5 or 2")
        if self.turnaround_s is not None and self.turnaround_s < 0:
            raise ValueError("turnaround must be >= 0")

    @property
    def bits_per_char(self) -> float:
        """Start bit + data bits + parity bit (unless N) + stop bits."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + float(self.stopbits)

    @property
    def char_time(self) -> float:
        """Seconds one character occupies the line."""
        return self.bits_per_char / self.baud

    def line_time(self, nbytes: int) -> float:
        """Seconds `nbytes` characters occupy the line."""
        return nbytes * self.char_time

    @property
    def interframe(self) -> float:
        """Silence that ends an RTU frame: 3.5 chars, 1.75 ms above 19200 baud."""
        if self.baud > FIXED_TIMING_BAUD:
            return FIXED_INTERFRAME_S
        return 3.5 * self.char_time

    @property
    def turnaround(self) -> float:
        """Delay between the end of a request and the start of its reply."""
        if self.turnaround_s is not None:
            return self.turnaround_s
        if self.baud >= FIXED_TIMING_BAUD:
            return DEFAULT_FAST_TURNAROUND_S
        return 3.5 * self.char_time

    def describe(self) -> str:
        """E.g. '19200 8E1'."""
        stop = int(self.stopbits) if float(self.stopbits).is_integer() else self.stopbits
        return f"{self.baud} {self.bytesize}{self.parity}{stop}"
