"""structlog set-up: JSON lines on stdout for journald, readable console lines on a terminal."""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from typing import Any, Callable, MutableMapping

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog for the whole process (call once, at start)."""
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    limit = RateLimit()
    renderer = (structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty()) if console
                else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            limit,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library: render those records the same way, to the
    # same stream. pymodbus and asyncua stay quiet: the agent reports device failures itself
    # (asyncua logs a stack for every publish request a dropped connection cancels).
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=renderer,
        foreign_pre_chain=[structlog.contextvars.merge_contextvars,  # machine=... of the task
                           structlog.stdlib.add_logger_name, structlog.processors.add_log_level,
                           limit,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)


def get_logger(**context: object) -> structlog.typing.FilteringBoundLogger:
    """A logger with `context` bound on every line (e.g. machine=...)."""
    return structlog.get_logger().bind(**context)  # type: ignore[no-any-return]


class RateLimit:
    """A structlog processor: repeats of the same warning or error (same event and the same
    text fields, e.g. machine and error) within a burst are dropped; the first line after
    the burst, or after `repeat` seconds of it, carries `repeated=<dropped count>`."""

    _LEVELS = {"warning", "error", "critical", "exception"}

    def __init__(self, quiet: float = 10.0, repeat: float = 60.0, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._quiet, self._repeat, self._max, self._clock = quiet, repeat, max_keys, clock
        # key -> [last logged, last seen, dropped since]; bounded, least recent evicted
        self._seen: OrderedDict[tuple[Any, ...], list[float]] = OrderedDict()

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
        if str(event.get("level", method)) not in self._LEVELS:
            return event
        key = tuple(sorted((k, v) for k, v in event.items()
                           if isinstance(v, str) and k not in ("timestamp",)))
        now = self._clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[1] < self._quiet and now - entry[0] < self._repeat:
            entry[1] = now
            entry[2] += 1
            self._seen.move_to_end(key)
            raise structlog.DropEvent
        if entry is not None and entry[2]:
            event["repeated"] = int(entry[2])
        self._seen[key] = [now, now, 0]
        self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return event
