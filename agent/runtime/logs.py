"""structlog set-up: JSON lines on stdout for journald, readable console lines on a terminal."""

from __future__ import annotations

import json
import logging
import math
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
                else structlog.processors.JSONRenderer(serializer=json_line))
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
                           structlog.stdlib.ExtraAdder(["repeated"]),
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
    ))
    # A processor may drop a structlog event by raising DropEvent, which structlog catches;
    # raised inside a stdlib handler it would reach the library that logged. A filter drops.
    handler.addFilter(StdlibRateLimit(limit))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)


def get_logger(**context: object) -> structlog.typing.FilteringBoundLogger:
    """A logger with `context` bound on every line (e.g. machine=...)."""
    return structlog.get_logger().bind(**context)  # type: ignore[no-any-return]


def json_line(event: Any, **kwargs: Any) -> str:
    """A log event as one line of valid JSON: NaN and infinities (a command may carry
    them) become strings, anything else unknown its str()."""
    kwargs.setdefault("default", str)
    try:
        return json.dumps(event, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(_finite(event), allow_nan=False, **kwargs)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _key_value(value: Any) -> Any:
    # repr keeps NaN equal to NaN (NaN != NaN would make every NaN line new)
    return repr(value) if isinstance(value, float) else value


class RateLimit:
    """A structlog processor: repeats of the same warning or error (the same event and the
    same scalar fields, e.g. machine and error; a field that differs, such as a request id,
    makes a line of its own) within a burst are dropped; the first line after the burst, or
    after `repeat` seconds of it, carries `repeated=<dropped count>`."""

    _LEVELS = {"warning", "error", "critical", "exception"}
    _SCALARS = (str, int, float, bool, type(None))

    def __init__(self, quiet: float = 10.0, repeat: float = 60.0, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._quiet, self._repeat, self._max, self._clock = quiet, repeat, max_keys, clock
        # key -> [last logged, last seen, dropped since]; bounded, least recent evicted
        self._seen: OrderedDict[tuple[Any, ...], list[float]] = OrderedDict()

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
        if str(event.get("level", method)) not in self._LEVELS:
            return event
        key = tuple(sorted((k, _key_value(v)) for k, v in event.items()
                           if isinstance(v, self._SCALARS) and k != "timestamp"))
        repeated = self.admit(key)
        if repeated is None:
            raise structlog.DropEvent
        if repeated:
            event["repeated"] = repeated
        return event

    def admit(self, key: tuple[Any, ...]) -> int | None:
        """None: a repeat within its burst, to drop; otherwise how many were dropped before."""
        now = self._clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[1] < self._quiet and now - entry[0] < self._repeat:
            entry[1] = now
            entry[2] += 1
            self._seen.move_to_end(key)
            return None
        dropped = int(entry[2]) if entry is not None else 0
        self._seen[key] = [now, now, 0]
        self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return dropped


class StdlibRateLimit(logging.Filter):
    """RateLimit for the standard library's records (libraries' loggers): drops by
    returning False, never by raising into the code that logged."""

    def __init__(self, limit: RateLimit) -> None:
        super().__init__()
        self._limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string: let the handler report it
            return True
        repeated = self._limit.admit(("stdlib", record.name, record.levelno, message))
        if repeated is None:
            return False
        if repeated:
            record.repeated = repeated
        return True
