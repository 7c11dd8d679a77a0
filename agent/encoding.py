"""Telemetry payloads (DESIGN.md): one batch as JSON or msgpack, readings in poll order."""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import msgpack

from agent.model import Reading

Encoder = Callable[[str, str, int, Sequence[Reading]], bytes]


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


def make_encoder(agent_id: str, encoding: str) -> Encoder:
    """An encoder (machine, epoch, seq, readings) -> payload bytes for the given encoding."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

    def encode_json(machine: str, epoch: str, seq: int, readings: Sequence[Reading]) -> bytes:
        return dumps({"agent": agent_id, "machine": machine, "epoch": epoch, "seq": seq,
                      "readings": [reading_map(r) for r in readings]}).encode()

    def encode_msgpack(machine: str, epoch: str, seq: int, readings: Sequence[Reading]) -> bytes:
        return msgpack.packb({"agent": agent_id, "machine": machine, "epoch": epoch, "seq": seq,
                              "readings": [reading_map(r) for r in readings]}, use_bin_type=True)

    if encoding == "json":
        return encode_json
    if encoding == "msgpack":
        return encode_msgpack
    raise ValueError(f"unknown encoding {encoding!r}")


def decode(payload: bytes) -> Any:
    """Decode a payload of either encoding (JSON starts with '{', msgpack never does)."""
    if payload[:1] == b"{":
        return json.loads(payload)
    return msgpack.unpackb(payload, raw=False)
