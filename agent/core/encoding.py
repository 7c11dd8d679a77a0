"""Telemetry payloads (docs/architecture.md): one batch as JSON or msgpack, readings in poll order.

The readings are encoded once, when the batch is made; the header that carries `seq` is
only known at commit, so the buffer frames the encoded readings with it by concatenation
instead of encoding the batch again.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Protocol, Sequence

import msgpack

from agent.core.model import Reading


def reading_map(r: Reading) -> dict[str, Any]:
    """The wire form of one reading; bad readings carry a reason and a null value."""
    item: dict[str, Any] = {"signal": r.signal, "value": r.value}
    if r.unit is not None:
        item["unit"] = r.unit
    item["quality"] = r.quality
    if r.reason is not None:
        item["reason"] = r.reason
    item["ts"] = r.ts
    return item


_MAX_TEMPLATES = 100_000  # bounded: reasons could in theory vary without end


class BatchCodec(Protocol):
    """How a profile's batches are encoded once, when collected: the readings or events of
    one poll (by the fan-out), framed with seq and epoch (by the buffer)."""

    def readings(self, readings: Sequence[Reading]) -> bytes: ...

    def events(self, events: Sequence[Mapping[str, Any]]) -> bytes: ...

    def frame(self, machine: str, epoch: str, seq: int, body: bytes,
              key: str = "readings") -> bytes: ...


class PayloadCodec:
    """Encodes readings and frames them into the telemetry payload of one encoding."""

    def __init__(self, agent_id: str, encoding: str) -> None:
        if encoding not in ("json", "msgpack"):
            raise ValueError(f"unknown encoding {encoding!r}")
        self._agent = agent_id
        self._json = encoding == "json"
        self._dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                                       allow_nan=False).encode
        self._prefixes: dict[tuple[str, str], bytes] = {}
        self._templates: dict[tuple[str, str | None, str, str | None], tuple[str, str]] = {}

    def readings(self, readings: Sequence[Reading]) -> bytes:
        """The encoded `readings` array of a batch."""
        if not self._json:
            return msgpack.packb([reading_map(r) for r in readings], use_bin_type=True)  # type: ignore[no-any-return]
        # Hot path: everything but value and ts is the same poll after poll, so each
        # (signal, unit, quality, reason) keeps its JSON text around the value; this is
        # about three times cheaper than building a dict per reading and encoding it.
        templates, dumps = self._templates, self._dumps
        parts = []
        for r in readings:
            key = (r.signal, r.unit, r.quality, r.reason)
            template = templates.get(key)
            if template is None:
                if len(templates) >= _MAX_TEMPLATES:
                    templates.clear()
                template = templates[key] = self._template(r)
            value = r.value
            kind = type(value)
            if kind is float:
                if not math.isfinite(value):  # type: ignore[arg-type]  # the normalizer marks them bad
                    raise ValueError(f"{r.signal}: {value!r} is not JSON compliant")
                text = repr(value)
            elif kind is bool:
                text = "true" if value else "false"
            elif kind is int:
                text = str(value)
            elif value is None:
                text = "null"
            else:
                text = dumps(value)
            parts.append(f"{template[0]}{text}{template[1]}{r.ts}}}")
        return f"[{','.join(parts)}]".encode()

    def _template(self, r: Reading) -> tuple[str, str]:
        dumps = self._dumps
        head = '{"signal":' + dumps(r.signal) + ',"value":'
        tail = "" if r.unit is None else ',"unit":' + dumps(r.unit)
        tail += ',"quality":' + dumps(r.quality)
        if r.reason is not None:
            tail += ',"reason":' + dumps(r.reason)
        return head, tail + ',"ts":'

    def frame(self, machine: str, epoch: str, seq: int, body: bytes,
              key: str = "readings") -> bytes:
        """The full payload {agent, machine, epoch, seq, readings|events} around `body`."""
        prefix = self._prefixes.get((machine, epoch))
        if prefix is None:
            prefix = self._prefixes[(machine, epoch)] = self._prefix(machine, epoch)
        if self._json:
            return b"".join((prefix, str(seq).encode(), b',"', key.encode(), b'":', body, b"}"))
        return b"".join((prefix, msgpack.packb(seq), msgpack.packb(key), body))

    def events(self, events: Sequence[Mapping[str, Any]]) -> bytes:
        """The encoded `events` array of an event batch (not a hot path)."""
        if self._json:
            return self._dumps(list(events)).encode()
        return msgpack.packb(list(events), use_bin_type=True)  # type: ignore[no-any-return]

    def _prefix(self, machine: str, epoch: str) -> bytes:
        if self._json:
            head = self._dumps({"agent": self._agent, "machine": machine, "epoch": epoch})
            return head[:-1].encode() + b',"seq":'
        pack = msgpack.packb
        # A 5-entry map header, then the first four pairs; `readings` is appended as is.
        return b"\x85" + b"".join(pack(x) for x in ("agent", self._agent, "machine", machine,
                                                     "epoch", epoch, "seq"))


def decode(payload: bytes) -> Any:
    """Decode a payload of either encoding (JSON starts with '{', msgpack never does)."""
    if payload[:1] == b"{":
        return json.loads(payload)
    return msgpack.unpackb(payload, raw=False)
