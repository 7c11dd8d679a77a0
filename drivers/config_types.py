"""Config value types shared by every driver and the agent: durations, byte sizes, paths.

They live on the drivers side because the import arrow runs agent -> drivers only.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, WithJsonSchema

_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(us|ms|s|m|h)?\s*$")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

_SIZE_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(kB|[KMGT]i?B|B|[kKMGT])?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1,
    "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4,
    "k": 1000, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4,
}


def parse_duration(value: object) -> float:
    """Seconds from `100ms`, `5s`, `1m`, `2h`, `250us` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (use e.g. 100ms, 5s, 1m)")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"{value!r} is not a duration (use e.g. 100ms, 5s, 1m)")
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration (use e.g. 100ms, 5s, 1m)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (use e.g. 100ms, 5s, 1m)")
    if seconds < 0:
        raise ValueError(f"{value!r}: a duration cannot be negative")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from `512MiB`, `1GiB`, `64kB`, `100B` or a bare number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size (use e.g. 512MiB, 1GiB)")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a size (use e.g. 512MiB, 1GiB)")
        number = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a size (use e.g. 512MiB, 1GiB)")
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a size (use e.g. 512MiB, 1GiB)")
    if number < 0:
        raise ValueError(f"{value!r}: a size cannot be negative")
    return int(number)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({
        "anyOf": [
            {"type": "number", "minimum": 0, "description": "seconds"},
            {"type": "string", "pattern": _DURATION_RE.pattern},
        ],
        "examples": ["100ms", "5s", "1m"],
    }),
]
"""Seconds as a float; config accepts `100ms`, `5s`, `1m` or a number of seconds."""

ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema({
        "anyOf": [
            {"type": "integer", "minimum": 0, "description": "bytes"},
            {"type": "string", "pattern": _SIZE_RE.pattern},
        ],
        "examples": ["512MiB", "1GiB"],
    }),
]
"""Bytes as an int; config accepts `512MiB`, `1GiB`, `64kB` or a number of bytes."""


def _resolve_path(value: str, info: ValidationInfo) -> str:
    # Relative to the config file that names it (the loader passes its folder), so a
    # machine file and its certificates can move together.
    base = (info.context or {}).get("base_dir")
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return str(path)


FilePath = Annotated[str, Field(min_length=1), AfterValidator(_resolve_path),
                     WithJsonSchema({"type": "string", "description": "file or folder; "
                                     "relative to the config file"})]
