"""structlog set-up: JSON lines on stdout for journald, readable console lines on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog for the whole process (call once, at start)."""
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    renderer = (structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty()) if console
                else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
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
