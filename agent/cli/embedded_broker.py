"""A small MQTT 3.1.1 broker (amqtt) on loopback, so `edge-agent demo` needs no mosquitto.

Run as its own process: `python -m agent.cli.embedded_broker --port PORT`. Once it accepts
connections it prints one line, ``mqtt broker listening on 127.0.0.1:PORT``, and it stops on
SIGTERM or SIGINT. It keeps nothing on disk: anonymous clients, QoS 0/1/2, retained messages
and wills, in memory. amqtt speaks MQTT 3.1.1 only (it refuses an MQTT 5 CONNECT with
"unsupported protocol version"), so an agent pointed at it should use `protocol: "3.1.1"`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

READY = "mqtt broker listening on"


def broker_config(host: str, port: int) -> dict[str, object]:
    """amqtt's configuration: one TCP listener, anonymous clients, no $SYS or packet logs."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def serve(host: str, port: int) -> int:
    """Run the broker until SIGTERM/SIGINT; returns the process exit code."""
    try:
        from amqtt.broker import Broker
    except ImportError as exc:  # a broken install: say what is missing
        print(f"embedded broker: amqtt is not installed ({exc}); pip install amqtt",
              file=sys.stderr, flush=True)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    broker = Broker(broker_config(host, port))
    try:
        await broker.start()
    except Exception as exc:  # amqtt wraps bind errors and the like in BrokerError
        cause = exc.__cause__ or exc
        print(f"embedded broker: cannot listen on {host}:{port}: {cause}", file=sys.stderr,
              flush=True)
        return 1
    print(f"{READY} {host}:{port}", flush=True)
    await stop.wait()
    try:
        # amqtt waits up to 5 s for its broadcast loop; nothing here needs to be kept.
        await asyncio.wait_for(broker.shutdown(), 2.0)
    except Exception:  # shutting down anyway
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.cli.embedded_broker", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--debug", action="store_true", help="log amqtt's own messages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.debug:
        # It logs a client that closes its socket without DISCONNECT (the agent's Will
        # tests, a killed agent) as an error with a traceback; that is normal here.
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        logging.getLogger("transitions").setLevel(logging.WARNING)
    return asyncio.run(serve(args.host, args.port))


def start(port: int, log_path: Path, host: str = "127.0.0.1", timeout: float = 20.0,
          **popen: Any) -> subprocess.Popen[bytes]:
    """Start the broker process (its messages go to `log_path`) and wait until it listens;
    raises RuntimeError with the broker's own reason if it cannot start (the process is
    then already gone)."""
    import selectors
    import time
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli.embedded_broker", "--host", host,
                                 "--port", str(port)], stdout=subprocess.PIPE, stderr=log,
                                 stdin=subprocess.DEVNULL, **popen)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                _stop(proc)
                raise RuntimeError(f"the embedded MQTT broker did not start within {timeout:.0f} s")
            if sel.select(min(left, 0.5)):
                line = proc.stdout.readline().decode(errors="replace")
                if line.startswith(READY):
                    break
                if not line:  # it exited
                    proc.wait()
                    raise RuntimeError(_failed(proc, log_path))
            elif proc.poll() is not None:
                raise RuntimeError(_failed(proc, log_path))
    proc.stdout.close()
    return proc


def _failed(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    reason = f": {lines[-1].removeprefix('embedded broker: ')}" if lines else ""
    return f"the embedded MQTT broker exited at start (code {proc.returncode}){reason}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    from agent.cli.processes import terminate
    terminate(proc, 5)


if __name__ == "__main__":
    sys.exit(main())
