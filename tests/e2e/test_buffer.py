"""The durable buffer (agent/buffer/store.py): real SQLite files in tmp_path, real asyncio, real
writer thread. Crash durability runs a Buffer in a child process that dies without close()."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import msgpack
import pytest

from agent.buffer.store import (MAX_PENDING, ROW_OVERHEAD, Buffer, Row, buffer_path, open_database,
                          read_stats, stats_of_file)
from agent.core.encoding import PayloadCodec, decode, reading_map
from agent.runtime.metrics import Metrics
from agent.core.model import BAD, GOOD, Batch, Reading

AGENT = "gw-test"
TS = 1_795_462_093_000_000_000
REPO = Path(__file__).resolve().parents[2]


class RecordingLog:
    """Test double of the structlog logger: records (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def _record(self, level: str) -> Callable[..., None]:
        def log(event: str, **kw: Any) -> None:
            self.events.append((level, event, kw))
        return log

    def __getattr__(self, level: str) -> Callable[..., None]:
        if level in ("debug", "info", "warning", "error", "critical", "exception"):
            return self._record(level)
        raise AttributeError(level)


def topic(machine: str) -> str:
    return f"factory/site/area/line/{machine}/telemetry"


def readings_for(machine: str, tag: int, count: int) -> list[Reading]:
    """`count` readings whose values identify (machine, tag); the last one is bad."""
    out = [Reading(f"sig.n{i}", tag * 100 + i, "mm" if i % 2 else None, GOOD, None, TS + tag)
           for i in range(count - 1)]
    out.append(Reading("sig.bad", None, None, BAD, "timeout", TS + tag))
    return out


def make_batch(codec: PayloadCodec, machine: str, tag: int, count: int = 2) -> Batch:
    return Batch(machine, topic(machine), codec.readings(readings_for(machine, tag, count)), count,
                 time.time_ns())


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def commit_all(buf: Buffer) -> None:
    """Commit every batch appended so far.

    Two flushes: one `flush()` can return before a just-appended batch is committed (see
    test_flush_commits_every_batch_appended_before_it); the second flush's command is always
    read after the writer has taken every batch appended before the first one.
    """
    await buf.flush()
    await buf.flush()


async def fetch_all(buf: Buffer) -> list[Row]:
    return await buf.fetch(0, 1_000_000)


class Env:
    """Builds buffers on files under tmp_path and closes them at the end of the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.opened: list[Buffer] = []

    def buffer(self, name: str = "buffer.db", *, max_bytes: int = 1 << 40,
               interval: float = 0.0, encoding: str = "json",
               metrics: Metrics | None = None, log: Any = None) -> Buffer:
        codec = PayloadCodec(AGENT, encoding)
        return Buffer(self.tmp_path / name, max_bytes, interval, codec,
                      log if log is not None else RecordingLog(),
                      metrics if metrics is not None else Metrics())

    async def open(self, name: str = "buffer.db", **kw: Any) -> Buffer:
        buf = self.buffer(name, **kw)
        await buf.open()
        self.opened.append(buf)
        return buf

    async def close_all(self) -> None:
        for buf in self.opened:
            await buf.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    yield e
    await e.close_all()


def per_machine(rows: list[Row]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in rows:
        out.setdefault(r.machine, []).append(r.seq)
    return out


# ---- seq and epoch ---------------------------------------------------------------------------

async def test_seq_starts_at_one_per_machine_and_is_gap_free(env: Env) -> None:
    buf = await env.open()
    codec = PayloadCodec(AGENT, "json")
    machines = ["press-07", "cnc-1", "imm-3"]
    appended: dict[str, int] = {m: 0 for m in machines}
    for i in range(600):
        m = machines[(i * 7 + i // 5) % 3]  # uneven interleaving
        appended[m] += 1
        assert buf.append(make_batch(codec, m, appended[m]))
        if i % 97 == 0:
            await buf.flush()  # several transactions of different sizes
        if i % 131 == 0:
            await asyncio.sleep(0.002)
    await commit_all(buf)
    rows = await fetch_all(buf)
    seqs = per_machine(rows)
    for m in machines:
        assert seqs[m] == list(range(1, appended[m] + 1)), m
    stats = await buf.stats()
    assert {m: s.seq for m, s in stats.machines.items()} == appended
    assert stats.batches == 600
    # Every payload carries its own seq and the readings appended as that seq.
    for r in rows:
        doc = decode(r.payload)
        assert (doc["agent"], doc["machine"], doc["epoch"], doc["seq"]) == (
            AGENT, r.machine, buf.epoch, r.seq)
        assert doc["readings"] == [reading_map(x) for x in readings_for(r.machine, r.seq, 2)]
        assert r.topic == topic(r.machine)


async def test_seq_and_epoch_survive_close_and_reopen(env: Env, tmp_path: Path) -> None:
    codec = PayloadCodec(AGENT, "json")
    first = env.buffer()
    await first.open()
    epoch = first.epoch
    assert re.fullmatch(r"[0-9a-f]{32}", epoch)
    for tag in range(1, 6):
        first.append(make_batch(codec, "a", tag))
        first.append(make_batch(codec, "b", tag))
    await first.close()

    second = env.buffer()
    await second.open()
    assert second.epoch == epoch
    for tag in range(6, 9):
        second.append(make_batch(codec, "a", tag))
    second.append(make_batch(codec, "c", 1))
    await second.close()

    third = await env.open()
    assert third.epoch == epoch
    rows = await fetch_all(third)
    assert per_machine(rows) == {"a": list(range(1, 9)), "b": list(range(1, 6)), "c": [1]}
    assert {decode(r.payload)["epoch"] for r in rows} == {epoch}
    assert [decode(r.payload)["seq"] for r in rows if r.machine == "a"] == list(range(1, 9))

    # A new file is a new epoch, and seq starts over there.
    other = await env.open("other/buffer.db")
    assert other.epoch != epoch and re.fullmatch(r"[0-9a-f]{32}", other.epoch)
    other.append(make_batch(codec, "a", 1))
    await commit_all(other)
    [row] = await fetch_all(other)
    assert (row.seq, decode(row.payload)["epoch"]) == (1, other.epoch)


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_fetched_payloads_decode_to_the_telemetry_map(env: Env, encoding: str) -> None:
    buf = await env.open(encoding=encoding)
    codec = PayloadCodec(AGENT, encoding)
    for tag in range(1, 4):
        buf.append(make_batch(codec, "press-07", tag, count=4))
    await commit_all(buf)
    rows = await fetch_all(buf)
    assert [r.seq for r in rows] == [1, 2, 3]
    for r in rows:
        doc = decode(r.payload)
        assert list(doc) == ["agent", "machine", "epoch", "seq", "readings"]
        assert doc == {"agent": AGENT, "machine": "press-07", "epoch": buf.epoch, "seq": r.seq,
                       "readings": [reading_map(x) for x in readings_for("press-07", r.seq, 4)]}
        bad = doc["readings"][-1]
        assert (bad["quality"], bad["reason"], bad["value"]) == ("bad", "timeout", None)
        if encoding == "msgpack":
            assert msgpack.unpackb(r.payload, raw=False) == doc
        else:
            assert json.loads(r.payload) == doc


# ---- fetch -----------------------------------------------------------------------------------

async def test_fetch_pages_in_id_order_and_keeps_per_machine_order(env: Env) -> None:
    buf = await env.open()
    codec = PayloadCodec(AGENT, "json")
    order = ["m1", "m2", "m1", "m3", "m3", "m1", "m2"] * 8  # 56 batches, interleaved
    counters: dict[str, int] = {}
    for m in order:
        counters[m] = counters.get(m, 0) + 1
        buf.append(make_batch(codec, m, counters[m]))
    await commit_all(buf)

    everything = await fetch_all(buf)
    assert [r.machine for r in everything] == order  # oldest first == append order
    ids = [r.id for r in everything]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    pages: list[list[Row]] = []
    cursor = 0
    while True:
        page = await buf.fetch(cursor, 7)
        if not page:
            break
        assert len(page) <= 7
        pages.append(page)
        cursor = page[-1].id
    assert [len(p) for p in pages] == [7] * 8
    assert [r for p in pages for r in p] == everything
    for m, seqs in per_machine(everything).items():
        assert seqs == list(range(1, counters[m] + 1))

    # after_id is exclusive; limit bounds the page; past the end nothing comes back.
    middle = everything[20].id
    assert [r.id for r in await buf.fetch(middle, 3)] == ids[21:24]
    assert await buf.fetch(ids[-1], 10) == []
    assert await buf.fetch(0, 0) == []
    assert (await buf.fetch(0, 1))[0] == everything[0]


async def test_rows_are_fetched_only_once_committed(env: Env, tmp_path: Path) -> None:
    buf = await env.open(interval=5.0)
    codec = PayloadCodec(AGENT, "json")
    # The first commit after idle happens at once; the next one waits for the interval.
    buf.append(make_batch(codec, "a", 1))
    await commit_all(buf)
    assert [r.seq for r in await fetch_all(buf)] == [1]

    buf.append(make_batch(codec, "a", 2))
    buf.append(make_batch(codec, "b", 1))
    await asyncio.sleep(0.1)  # the writer has taken them into its open transaction
    assert [r.seq for r in await fetch_all(buf)] == [1]
    assert stats_of_file(tmp_path / "buffer.db").batches == 1  # not on disk for others either

    await buf.flush()
    rows = await fetch_all(buf)
    assert [(r.machine, r.seq) for r in rows] == [("a", 1), ("a", 2), ("b", 1)]
    assert stats_of_file(tmp_path / "buffer.db").batches == 3


async def test_commit_interval_commits_without_flush(env: Env) -> None:
    buf = await env.open(interval=0.3)
    codec = PayloadCodec(AGENT, "json")
    buf.append(make_batch(codec, "a", 1))
    await commit_all(buf)
    t0 = time.monotonic()
    buf.append(make_batch(codec, "a", 2))
    await asyncio.sleep(0.05)
    assert len(await fetch_all(buf)) == 1  # held back: the interval has not passed
    while len(await fetch_all(buf)) < 2:
        assert time.monotonic() - t0 < 5.0, "the group commit never happened"
        await asyncio.sleep(0.02)
    assert [r.seq for r in await fetch_all(buf)] == [1, 2]


async def test_batches_and_acks_that_arrive_mid_transaction_are_taken_at_its_commit(
        env: Env) -> None:
    """Within an open transaction the writer is not woken per batch or ack; what arrives
    meanwhile must still be committed, and acks applied, by the commit that is due. Watched
    only through what commits publish (committed_id, the batches gauge): a fetch or stats
    call would wake the writer itself and hide a missed wake-up."""
    metrics = Metrics()
    buf = await env.open(interval=0.2, metrics=metrics)
    codec = PayloadCodec(AGENT, "json")

    async def until(check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 10
        while not check():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.02)

    for tag in range(1, 31):  # several commit intervals' worth, some in each transaction
        buf.append(make_batch(codec, "a", tag))
        await asyncio.sleep(0.02)
    await until(lambda: buf.committed_id == 30,
                "batches appended during a transaction were never committed")
    assert sample(metrics, "edge_agent_buffer_batches") == 30
    for row_id in range(1, 31):
        buf.ack([row_id])
        await asyncio.sleep(0.02)
    await until(lambda: sample(metrics, "edge_agent_buffer_batches") == 0,
                "acks sent during a transaction were never applied")
    assert [r.seq for r in await fetch_all(buf)] == []


# ---- ack -------------------------------------------------------------------------------------

async def test_ack_deletes_rows_for_good(env: Env, tmp_path: Path) -> None:
    buf = await env.open()
    codec = PayloadCodec(AGENT, "json")
    for tag in range(1, 11):
        buf.append(make_batch(codec, "a", tag))
    await commit_all(buf)
    rows = await fetch_all(buf)
    before = await buf.stats()
    assert before.batches == 10
    assert before.bytes == sum(len(r.payload) + len(r.topic) + ROW_OVERHEAD for r in rows)

    acked = rows[:4] + [rows[6]]
    buf.ack([r.id for r in acked])
    await buf.flush()
    left = await fetch_all(buf)
    assert [r.seq for r in left] == [5, 6, 8, 9, 10]
    after = await buf.stats()
    assert after.batches == 5
    assert after.bytes == before.bytes - sum(len(r.payload) + len(r.topic) + ROW_OVERHEAD
                                             for r in acked)
    assert after.machines["a"].seq == 10  # acking never rewinds seq
    assert after.machines["a"].dropped_batches == 0  # an ack is not a drop

    buf.ack([999_999, rows[0].id])  # unknown and already acked ids are ignored
    await buf.flush()
    assert (await buf.stats()).batches == 5
    await buf.close()

    again = await env.open()
    assert [r.seq for r in await fetch_all(again)] == [5, 6, 8, 9, 10]
    assert stats_of_file(tmp_path / "buffer.db").batches == 5
    # Ack everything; the machine's seq is still persisted and continues.
    again.ack([r.id for r in await fetch_all(again)])
    await again.flush()
    assert await fetch_all(again) == []
    await again.close()
    third = await env.open()
    third.append(make_batch(codec, "a", 11))
    await commit_all(third)
    [row] = await fetch_all(third)
    assert row.seq == 11 and row.id > rows[-1].id  # ids are never reused either


async def test_ack_many_ids_in_one_call(env: Env) -> None:
    buf = await env.open()
    codec = PayloadCodec(AGENT, "json")
    for tag in range(1, 1201):
        buf.append(make_batch(codec, "a", tag, count=1))
    await commit_all(buf)
    rows = await fetch_all(buf)
    buf.ack([r.id for r in rows[:1150]])  # more than one 500-id chunk
    await buf.flush()
    assert [r.seq for r in await fetch_all(buf)] == list(range(1151, 1201))
    assert (await buf.stats()).batches == 50


# ---- on_commit and metrics -------------------------------------------------------------------

async def test_on_commit_is_called_after_each_commit(env: Env) -> None:
    metrics = Metrics()
    buf = await env.open(metrics=metrics)
    codec = PayloadCodec(AGENT, "json")
    seen: list[int] = []

    def on_commit() -> None:
        # Called on the event loop once the rows are durable: a fetch would see them.
        seen.append(stats_of_file(buf.path).batches)
    buf.on_commit = on_commit

    buf.append(make_batch(codec, "a", 1))
    await commit_all(buf)
    assert seen == [1]
    for tag in range(2, 5):
        buf.append(make_batch(codec, "a", tag))
    await commit_all(buf)
    assert seen and seen[-1] == 4
    commits = len(seen)
    assert sample(metrics, "edge_agent_buffer_commits_total") == commits

    await buf.flush()  # nothing pending: no transaction, no callback
    await fetch_all(buf)
    await buf.stats()
    await asyncio.sleep(0.01)
    assert len(seen) == commits
    buf.ack([(await fetch_all(buf))[0].id])
    await buf.flush()
    assert len(seen) == commits + 1  # an ack is a commit too
    assert sample(metrics, "edge_agent_buffer_batches") == 3
    assert sample(metrics, "edge_agent_buffer_bytes") == (await buf.stats()).bytes


# ---- the byte bound --------------------------------------------------------------------------

async def test_max_bytes_drops_oldest_and_counts_exactly(env: Env, tmp_path: Path) -> None:
    metrics = Metrics()
    log = RecordingLog()
    max_bytes = 6000
    buf = await env.open(max_bytes=max_bytes, metrics=metrics, log=log)
    codec = PayloadCodec(AGENT, "json")
    order: list[tuple[str, int]] = []  # (machine, seq) in append order
    counts: dict[tuple[str, int], int] = {}
    seqs: dict[str, int] = {}
    for i in range(300):
        m = "press-a" if i % 3 else "cnc-b"
        seqs[m] = seqs.get(m, 0) + 1
        n = 1 + (i * 5) % 7  # 1..7 readings: batches of different sizes
        counts[(m, seqs[m])] = n
        order.append((m, seqs[m]))
        assert buf.append(make_batch(codec, m, seqs[m], count=n))
        if i % 40 == 39:
            await buf.flush()  # several commits, each one enforcing the bound
    await commit_all(buf)

    stats = await buf.stats()
    rows = await fetch_all(buf)
    sizes = [len(r.payload) + len(r.topic) + ROW_OVERHEAD for r in rows]
    assert stats.bytes == sum(sizes) <= max_bytes
    assert stats.batches == len(rows) > 0
    # Not more was dropped than needed: one more of the largest rows would not have fit.
    assert stats.bytes > max_bytes - max(sizes)
    # The survivors are exactly the newest batches, across machines (oldest-first by id).
    assert [(r.machine, r.seq) for r in rows] == order[-len(rows):]

    dropped = order[:-len(rows)]
    for m, last in seqs.items():
        ms = stats.machines[m]
        stored = [r.seq for r in rows if r.machine == m]
        assert ms.seq == last
        assert len(stored) + ms.dropped_batches == last
        assert stored == list(range(last - len(stored) + 1, last + 1))
        assert ms.dropped_readings == sum(counts[k] for k in dropped if k[0] == m)

    total_batches = sum(s.dropped_batches for s in stats.machines.values())
    total_readings = sum(s.dropped_readings for s in stats.machines.values())
    assert total_batches == len(dropped) > 0
    assert sample(metrics, "edge_agent_buffer_dropped_batches_total",
                  reason="buffer_full") == total_batches
    assert sample(metrics, "edge_agent_buffer_dropped_readings_total",
                  reason="buffer_full") == total_readings
    for reason in ("overflow", "write_failed"):
        assert sample(metrics, "edge_agent_buffer_dropped_batches_total", reason=reason) == 0
    assert sample(metrics, "edge_agent_buffer_bytes") == stats.bytes
    assert sample(metrics, "edge_agent_buffer_batches") == stats.batches
    warnings = [kw for level, event, kw in log.events if level == "warning"]
    assert warnings and sum(kw["batches"] for kw in warnings) == total_batches
    assert sum(kw["readings"] for kw in warnings) == total_readings

    # The counts are persisted with the rows.
    await buf.close()
    on_disk = stats_of_file(tmp_path / "buffer.db")
    assert on_disk.machines == stats.machines
    assert on_disk.bytes == stats.bytes and on_disk.batches == stats.batches


async def test_bound_accounting_with_acks(env: Env) -> None:
    buf = await env.open(max_bytes=3000)
    codec = PayloadCodec(AGENT, "json")
    acked = 0
    for tag in range(1, 201):
        buf.append(make_batch(codec, "a", tag, count=3))
        if tag % 25 == 0:
            await commit_all(buf)
            rows = await fetch_all(buf)
            buf.ack([r.id for r in rows[:2]])  # the uplink delivered the two oldest
            acked += 2
    await commit_all(buf)
    stats = await buf.stats()
    rows = await fetch_all(buf)
    ms = stats.machines["a"]
    assert stats.bytes <= 3000
    assert len(rows) + ms.dropped_batches + acked == ms.seq == 200
    assert ms.dropped_readings == 3 * ms.dropped_batches
    assert [r.seq for r in rows] == list(range(201 - len(rows), 201))


async def test_a_batch_larger_than_the_bound_is_dropped_and_counted(env: Env) -> None:
    metrics = Metrics()
    buf = await env.open(max_bytes=600, metrics=metrics)
    codec = PayloadCodec(AGENT, "json")
    buf.append(make_batch(codec, "a", 1, count=20))
    await commit_all(buf)
    stats = await buf.stats()
    assert (stats.batches, stats.bytes) == (0, 0)
    assert (stats.machines["a"].seq, stats.machines["a"].dropped_batches,
            stats.machines["a"].dropped_readings) == (1, 1, 20)
    assert sample(metrics, "edge_agent_buffer_dropped_readings_total", reason="buffer_full") == 20
    buf.append(make_batch(codec, "a", 2, count=1))
    await commit_all(buf)
    assert [r.seq for r in await fetch_all(buf)] == [2]


async def test_overflow_of_pending_appends_is_refused_and_counted(env: Env) -> None:
    # Before open() no writer drains the queue, so the bound of pending batches is reached
    # deterministically.
    metrics = Metrics()
    buf = env.buffer(metrics=metrics)
    codec = PayloadCodec(AGENT, "json")
    batch = make_batch(codec, "a", 1, count=3)
    for _ in range(MAX_PENDING):
        assert buf.append(batch) is True
    assert buf.append(batch) is False
    assert buf.append(make_batch(codec, "a", 2, count=5)) is False
    assert buf.refused == 2
    assert sample(metrics, "edge_agent_buffer_dropped_batches_total", reason="overflow") == 2
    assert sample(metrics, "edge_agent_buffer_dropped_readings_total", reason="overflow") == 8
    await buf.open()
    env.opened.append(buf)
    await commit_all(buf)
    stats = await buf.stats()
    # A refused batch never got a seq: the accepted ones are 1..MAX_PENDING without a gap.
    assert stats.batches == MAX_PENDING and stats.machines["a"].seq == MAX_PENDING
    assert stats.machines["a"].dropped_batches == 0


# ---- stats, files, paths ---------------------------------------------------------------------

async def test_stats_of_file_reads_a_running_buffer_without_disturbing_it(env: Env,
                                                                          tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    buf = await env.open()
    codec = PayloadCodec(AGENT, "json")
    for tag in range(1, 6):
        buf.append(make_batch(codec, "a", tag))
        buf.append(make_batch(codec, "b", tag))
    await commit_all(buf)
    live = await buf.stats()
    seen = stats_of_file(path)
    assert seen == live
    assert seen.epoch == buf.epoch and seen.batches == 10
    assert {m: s.seq for m, s in seen.machines.items()} == {"a": 5, "b": 5}
    assert seen.oldest_ns is not None and abs(seen.oldest_ns - time.time_ns()) < 60 * 10**9

    # A reader that keeps a read transaction open does not block commits (WAL).
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 10
        buf.append(make_batch(codec, "a", 6))
        await asyncio.wait_for(commit_all(buf), 5)
        assert reader.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 10  # snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 11
        with pytest.raises(sqlite3.OperationalError):
            reader.execute("DELETE FROM batches")  # read-only for real
    finally:
        reader.close()
    assert stats_of_file(path).batches == 11
    await buf.close()
    assert stats_of_file(path).batches == 11  # and after close


def test_stats_of_file_of_a_missing_buffer(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "buffer.db"
    with pytest.raises(FileNotFoundError):
        stats_of_file(path)
    assert not path.exists() and not path.parent.exists()


def test_open_database_creates_a_wal_database_with_a_stable_epoch(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "buffer.db"
    conn = open_database(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        stats = read_stats(conn)
        assert re.fullmatch(r"[0-9a-f]{32}", stats.epoch)
        assert (stats.batches, stats.bytes, stats.oldest_ns, stats.machines) == (0, 0, None, {})
    finally:
        conn.close()
    again = open_database(path)
    try:
        assert read_stats(again).epoch == stats.epoch
    finally:
        again.close()
    assert stats_of_file(path).epoch == stats.epoch


def test_buffer_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "etc" / "edge-agent"
    state = tmp_path / "state"
    assert buffer_path(root, "/var/lib/edge-agent/buffer.db", None) == Path(
        "/var/lib/edge-agent/buffer.db")
    assert buffer_path(root, "buffer.db", None) == root / "buffer.db"
    assert buffer_path(root, "data/buf.sqlite", None) == root / "data" / "buf.sqlite"
    assert buffer_path(root, "../shared/buffer.db", None) == root / ".." / "shared" / "buffer.db"
    # state_dir replaces the folder, whatever the configured path was; the name is kept.
    assert buffer_path(root, "/var/lib/edge-agent/buffer.db", state) == state / "buffer.db"
    assert buffer_path(root, "data/buf.sqlite", state) == state / "buf.sqlite"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert buffer_path(root, "~/edge/buffer.db", None) == tmp_path / "home" / "edge" / "buffer.db"
    assert buffer_path(root, "~/edge/buffer.db", state) == state / "buffer.db"


# ---- lifecycle -------------------------------------------------------------------------------

async def test_open_failure_is_raised_by_open(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    buf = Buffer(blocker / "buffer.db", 1 << 30, 0.0, PayloadCodec(AGENT, "json"),
                 RecordingLog(), Metrics())
    with pytest.raises(OSError):
        await asyncio.wait_for(buf.open(), 5)


async def test_calls_after_close_raise_and_close_is_idempotent(env: Env) -> None:
    buf = env.buffer()
    await buf.open()
    assert buf.alive
    await buf.close()
    assert not buf.alive
    await buf.close()
    with pytest.raises(RuntimeError, match="closed"):
        await buf.fetch(0, 10)
    with pytest.raises(RuntimeError, match="closed"):
        await buf.flush()
    with pytest.raises(RuntimeError, match="closed"):
        await buf.stats()


async def test_close_commits_the_open_transaction_and_checkpoints(env: Env, tmp_path: Path) -> None:
    buf = await env.open(interval=5.0)
    codec = PayloadCodec(AGENT, "json")
    buf.append(make_batch(codec, "a", 1))
    await commit_all(buf)
    buf.append(make_batch(codec, "a", 2))  # held in the open transaction by the interval
    await asyncio.sleep(0.1)
    await buf.close()
    assert stats_of_file(tmp_path / "buffer.db").batches == 2
    wal = tmp_path / "buffer.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed into the main file


# ---- crash durability (a child process that dies without close) ------------------------------

CHILD = textwrap.dedent("""
    import asyncio, json, os, signal, sys, time
    from pathlib import Path
    from agent.buffer.store import Buffer
    from agent.core.encoding import PayloadCodec
    from agent.runtime.metrics import Metrics
    from agent.core.model import Batch, Reading

    class Log:
        def __getattr__(self, name):
            return lambda event, **kw: None

    path, interval, start, count, extra, how = (
        sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
        sys.argv[6])

    def batch(codec, machine, tag):
        readings = [Reading("sig.tag", tag, None, "good", None, tag)]
        return Batch(machine, "t/" + machine, codec.readings(readings), 1, time.time_ns())

    async def main():
        codec = PayloadCodec("gw-test", "msgpack")
        buf = Buffer(Path(path), 1 << 40, interval, codec, Log(), Metrics())
        await buf.open()
        for tag in range(start, start + count):
            buf.append(batch(codec, "a", tag))
            if tag % 3 == 0:
                buf.append(batch(codec, "b", tag))
            if tag % 17 == 0:
                await buf.flush()
        await buf.flush()
        await buf.flush()
        rows = await buf.fetch(0, 10**9)
        last = {}
        for r in rows:
            last[r.machine] = r.seq
        print(json.dumps({"epoch": buf.epoch, "last": last, "rows": len(rows)}), flush=True)
        for tag in range(start + count, start + count + extra):  # never flushed
            buf.append(batch(codec, "a", tag))
        await asyncio.sleep(0.05)
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(0)

    asyncio.run(main())
""")


def run_child(path: Path, interval: float, start: int, count: int, extra: int,
              how: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(interval), str(start), str(count),
         str(extra), how],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    expected_rc = -9 if how == "kill" else 0
    assert proc.returncode == expected_rc, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def test_flushed_batches_survive_exit_and_kill_9_without_close(env: Env,
                                                                     tmp_path: Path) -> None:
    path = tmp_path / "state" / "buffer.db"
    # 1) exits without close(); batches after the last flush may or may not have committed.
    one = run_child(path, 0.0, 1, 60, 5, "exit")
    assert one["last"] == {"a": 60, "b": 20} and one["rows"] == 80
    # 2) killed with SIGKILL, with a long commit interval: the unflushed batches are still in
    #    the open transaction and must vanish without leaving a gap.
    after_one = stats_of_file(path)
    two = run_child(path, 5.0, 100, 40, 7, "kill")
    assert two["epoch"] == one["epoch"] == after_one.epoch
    assert (path.parent / "buffer.db-wal").exists()  # the kill left the WAL behind
    assert two["last"]["a"] == after_one.machines["a"].seq + 40
    assert two["last"]["b"] == after_one.machines["b"].seq + 13

    buf = await env.open("state/buffer.db")
    assert buf.epoch == one["epoch"]
    rows = await fetch_all(buf)
    seqs = per_machine(rows)
    # Every flushed batch is there, gap-free, and the killed child's tail is not.
    assert seqs["a"] == list(range(1, two["last"]["a"] + 1))
    assert seqs["b"] == list(range(1, two["last"]["b"] + 1))
    tags = [decode(r.payload)["readings"][0]["value"] for r in rows if r.machine == "a"]
    assert tags[:60] == list(range(1, 61))
    assert tags[-40:] == list(range(100, 140))
    for r in rows:
        doc = decode(r.payload)
        assert (doc["machine"], doc["seq"], doc["epoch"]) == (r.machine, r.seq, buf.epoch)
    # Numbering continues after the crash.
    codec = PayloadCodec(AGENT, "msgpack")
    buf.append(make_batch(codec, "a", 999))
    buf.append(make_batch(codec, "c", 1))
    await commit_all(buf)
    new = per_machine((await fetch_all(buf))[-2:])
    assert new == {"a": [two["last"]["a"] + 1], "c": [1]}


# ---- bugs ------------------------------------------------------------------------------------

async def test_flush_commits_every_batch_appended_before_it(env: Env) -> None:
    buf = await env.open(interval=5.0)
    codec = PayloadCodec(AGENT, "json")
    for tag in range(1, 501):
        await buf.fetch(0, 1)  # e.g. the uplink's fetch, running alongside a machine
        buf.append(make_batch(codec, "a", tag))
        await buf.flush()
        rows = await buf.fetch(0, 1_000_000)
        # Actual (typically within a few iterations): the last batch is missing.
        assert [r.seq for r in rows][-1:] == [tag], f"iteration {tag}"


async def test_close_commits_every_batch_appended_before_it(tmp_path: Path) -> None:
    codec = PayloadCodec(AGENT, "json")
    for run in range(100):
        metrics = Metrics()
        path = tmp_path / f"b{run}.db"
        buf = Buffer(path, 1 << 40, 5.0, codec, RecordingLog(), metrics)
        await buf.open()
        await buf.fetch(0, 1)
        for tag in range(1, 21):
            assert buf.append(make_batch(codec, "a", tag))
        await buf.close()
        dropped = sample(metrics, "edge_agent_buffer_dropped_batches_total", reason="overflow")
        # Actual (typically within a few runs): fewer than 20 stored, and 0 counted as dropped.
        assert stats_of_file(path).batches + dropped == 20, f"run {run}"


async def test_append_after_close_is_refused_or_counted(env: Env) -> None:
    metrics = Metrics()
    buf = env.buffer(metrics=metrics)
    await buf.open()
    await buf.close()
    codec = PayloadCodec(AGENT, "json")
    accepted = buf.append(make_batch(codec, "a", 1, count=3))
    counted = sum(sample(metrics, "edge_agent_buffer_dropped_batches_total", reason=r)
                  for r in ("overflow", "write_failed", "closed"))
    # Actual: accepted is True and counted == 0 -- the batch silently disappears.
    assert accepted is False or counted == 1


# ---- disk full (SQLite's page limit stands in for a full filesystem) ------------------------

async def test_disk_full_drops_oldest_batches_counts_them_and_keeps_running(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.buffer.store as buffer_module

    real_open = buffer_module.open_database

    def small_disk(path: Path) -> sqlite3.Connection:
        conn = real_open(path)
        used = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {used + 40}")  # about 160 KiB more, at most
        return conn

    monkeypatch.setattr(buffer_module, "open_database", small_disk)
    metrics = Metrics()
    buf = env.buffer(max_bytes=1024**3, metrics=metrics)  # the byte bound is not what limits
    await buf.open()
    env.opened.append(buf)
    codec = PayloadCodec(AGENT, "json")
    total = 300
    for i in range(total):
        assert buf.append(make_batch(codec, "a", i, count=20))
        if i % 10 == 9:
            await commit_all(buf)
    await commit_all(buf)
    assert buf.alive, "a full disk must not stop the buffer"
    stats = await buf.stats()
    a = stats.machines["a"]
    dropped = sample(metrics, "edge_agent_buffer_dropped_batches_total", reason="disk_full")
    lost = sample(metrics, "edge_agent_buffer_dropped_batches_total", reason="write_failed") or 0
    assert dropped and dropped > 0
    # Every batch is accounted for: stored, dropped (oldest first, counted per machine) or,
    # if even that could not make room, lost before it got a seq (counted in the metric).
    assert a.dropped_batches == dropped
    assert stats.batches + a.dropped_batches == a.seq
    assert a.seq + lost == total
    rows = await fetch_all(buf)
    seqs = [r.seq for r in rows]
    assert seqs == list(range(a.seq - len(seqs) + 1, a.seq + 1)), "the newest are kept, in order"
