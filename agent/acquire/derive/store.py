"""Derived counters across restarts: the last device value and the total of each, per
machine, in a small JSON file beside the buffer.

The file may lag behind (it is written at most every few seconds): after a restart the
first device value is compared with the saved one, so the counts made meanwhile, a wrap
included, are still added. Only a wrap *and* a later climb past the saved value while
the agent was down would go unseen.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger as Log

WRITE_EVERY = 5.0  # seconds


class CounterStore:
    """(raw, total) of every derived counter; one per agent."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._data: dict[str, dict[str, list[int]]] = {}
        self._dirty = False

    async def open(self, log: Log) -> None:
        """Read the saved counters (a damaged file is logged and started over)."""
        try:
            self._data = await asyncio.to_thread(self._read)
        except (OSError, ValueError) as exc:
            log.warning("derived counters file unreadable: counting starts over",
                        path=str(self._path), error=str(exc))
            self._data = {}

    def _read(self) -> dict[str, dict[str, list[int]]]:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        data = json.loads(text)
        if not isinstance(data, dict) or not all(
                isinstance(v, dict) and all(_pair(p) for p in v.values()) for v in data.values()):
            raise ValueError("not a map of machine -> name -> [raw, total]")
        return data

    def view(self, machine: str) -> CounterView:
        """The counters of one machine."""
        return CounterView(self, machine)

    def get(self, machine: str, name: str) -> tuple[int, int] | None:
        pair = self._data.get(machine, {}).get(name)
        return (pair[0], pair[1]) if pair is not None else None

    def put(self, machine: str, name: str, raw: int, total: int) -> None:
        counters = self._data.setdefault(machine, {})
        if counters.get(name) != [raw, total]:  # an unchanged count writes nothing (flash)
            counters[name] = [raw, total]
            self._dirty = True

    async def keep(self) -> None:
        """Write changes every few seconds; run under supervision."""
        while True:
            await asyncio.sleep(WRITE_EVERY)
            await self.flush()

    async def flush(self) -> None:
        """Write the file now if anything changed."""
        if self._dirty:
            self._dirty = False
            text = json.dumps(self._data, separators=(",", ":"))
            await asyncio.to_thread(self._write, text)

    def _write(self, text: str) -> None:
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self._path)  # a power cut leaves the old file or the new one


class CounterView:
    """One machine's slice of the store."""

    def __init__(self, store: CounterStore, machine: str) -> None:
        self._store, self._machine = store, machine

    def get(self, name: str) -> tuple[int, int] | None:
        return self._store.get(self._machine, name)

    def put(self, name: str, raw: int, total: int) -> None:
        self._store.put(self._machine, name, raw, total)


def _pair(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(type(v) is int for v in value))
