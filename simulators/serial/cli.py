"""Command line of the serial simulators: ``add_link_arguments`` (``--pty | --serial DEVICE |
--tcp PORT``, ``--baud``, ``--parity``, ``--stopbits``, ``--bytesize``, ``--turnaround-ms``),
``add_fault_arguments`` (``--noise --drop-every --slow-ms --corrupt-every --cut-every``),
``link_from_args`` (through ``open_link``, which picks the transport) and ``run_cli`` (print
``<kind> listening on <address>``, serve until SIGTERM/SIGINT, exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Protocol

from simulators.serial.fd_link import DeviceLink, PtyLink
from simulators.serial.line import BYTESIZES, PARITIES, STOPBITS, LineSettings
from simulators.serial.link import SerialLink
from simulators.serial.tcp_link import TcpLink


def open_link(
    *,
    pty: bool = False,
    serial_device: str | None = None,
    tcp_port: int | None = None,
    settings: LineSettings | None = None,
) -> SerialLink:
    """The link for exactly one of: a new pty, an existing device, a TCP port (0 = OS picks)."""
    chosen = [pty, serial_device is not None, tcp_port is not None]
    if sum(chosen) != 1:
        raise ValueError("choose exactly one of pty, serial_device, tcp_port")
    if pty:
        return PtyLink(settings)
    if serial_device is not None:
        return DeviceLink(serial_device, settings)
    assert tcp_port is not None
    return TcpLink(tcp_port, settings)


class Startable(Protocol):
    """Anything with async start/stop and an address (the serial simulators)."""

    @property
    def address(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def add_link_arguments(
    p: argparse.ArgumentParser, *, baud: int, parity: str, bytesize: int = 8, stopbits: float = 1
) -> None:
    """--pty | --serial DEVICE | --tcp PORT and the line parameters."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true",
                       help="create a pty pair and print the slave path to open")
    where.add_argument("--serial", metavar="DEVICE", help="serve on an existing serial device")
    where.add_argument("--tcp", type=int, metavar="PORT",
                       help="serve raw serial bytes on 127.0.0.1:PORT (0 = OS picks)")
    p.add_argument("--baud", type=int, default=baud, help=f"baud rate (default {baud})")
    p.add_argument("--parity", choices=PARITIES, default=parity,
                   help=f"parity (default {parity})")
    p.add_argument("--stopbits", type=float, choices=STOPBITS, default=float(stopbits),
                   help=f"stop bits (default {stopbits})")
    p.add_argument("--bytesize", type=int, choices=BYTESIZES, default=bytesize,
                   help=f"data bits (default {bytesize})")
    p.add_argument("--turnaround-ms", type=float, default=None,
                   help="request end to reply start, ms (default 1 at >= 19200 baud, else 3.5 chars)")


def add_fault_arguments(p: argparse.ArgumentParser) -> None:
    """The LineFaults switches."""
    p.add_argument("--noise", type=float, default=0.0,
                   help="probability of a burst of random bytes before a reply/line")
    p.add_argument("--drop-every", type=int, default=0, help="do not send every N-th reply/line")
    p.add_argument("--slow-ms", type=float, default=0.0, help="extra delay before each reply, ms")
    p.add_argument("--corrupt-every", type=int, default=0,
                   help="wrong checksum on every N-th reply/line")
    p.add_argument("--cut-every", type=int, default=0,
                   help="send only the first half of every N-th reply/line")


def settings_from_args(args: argparse.Namespace) -> LineSettings:
    """LineSettings from add_link_arguments' options (ValueError if invalid)."""
    turnaround = None if args.turnaround_ms is None else args.turnaround_ms / 1000.0
    return LineSettings(baud=args.baud, bytesize=args.bytesize, parity=args.parity,
                        stopbits=args.stopbits, turnaround_s=turnaround)


def link_from_args(args: argparse.Namespace) -> SerialLink:
    """The link chosen by add_link_arguments' options."""
    if args.tcp is not None and not 0 <= args.tcp <= 65535:
        raise ValueError("--tcp port must be within 0..65535")
    return open_link(pty=args.pty, serial_device=args.serial, tcp_port=args.tcp,
                     settings=settings_from_args(args))


async def run_cli(sim: Startable, kind: str) -> int:
    """Start sim, print '<kind> listening on <address>', serve until SIGTERM/SIGINT; exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sim.start()
    except OSError as exc:  # includes serial.SerialException
        print(f"{kind}: cannot listen: {exc}", file=sys.stderr)
        with contextlib.suppress(Exception):
            await sim.stop()
        return 1
    print(f"{kind} listening on {sim.address}", flush=True)
    await stop.wait()
    await sim.stop()
    return 0
