"""The birth/death sequence number: persisted, +1 per new MQTT session, 0..255."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


class BdSeq:
    """bdSeq of the current session, kept in a small file beside the buffer so a restart
    goes on with the next number instead of reusing one a host may still hold."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.value = -1

    async def next(self) -> int:
        """The bdSeq of a new connection (its Will and its NBIRTH), written before use."""
        if self.value < 0:
            self.value = await asyncio.to_thread(self._read)
        self.value = (self.value + 1) % 256
        await asyncio.to_thread(self._write, self.value)
        return self.value

    def _read(self) -> int:
        try:
            text = self._path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return -1  # the first session gets 0
        except OSError:
            return -1
        return int(text) % 256 if text.isdigit() else -1

    def _write(self, value: int) -> None:
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(f"{value}\n", encoding="ascii")
        os.replace(tmp, self._path)  # never a half-written number after a power cut
