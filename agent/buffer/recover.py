"""`edge-agent buffer recover`: carry what a damaged buffer still holds into a fresh one.

Only the operator starts it, with the agent stopped (it takes the buffer's lock, so neither
can start while the other runs). The damaged file is never deleted: it is moved aside, with
its -wal and -shm, to `<name>.damaged-<UTC time>`. Every batch that can still be read is
copied with its id, payload, epoch and seq, so the next `edge-agent run` delivers it exactly
as it would have been delivered; the per-machine seq state is carried over so that no
(machine, seq) is ever numbered twice. Where that state itself is unreadable, numbering
continues above every seq the file can have used, and if even that bound is unknown the
new buffer gets a new epoch.

sqlite3's `.recover` is a feature of the sqlite3 shell, not of the library: the rows are read
here by id, skipping what SQLite reports as damaged. Blocking file work: a CLI command, not
for the event loop.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from agent.buffer.lock import BufferLock
from agent.buffer.store import BufferUnusable, buffer_error, open_database
from agent.core.encoding import decode

_CHUNK = 512  # rows per query while the file reads fine
_COMMIT_EVERY = 8192  # rows per transaction of the new file: its WAL stays small
_PROBE_SPAN = 10_000  # a damaged id span up to this wide is read id by id for what survived
_COLUMNS = "id, machine, seq, topic, payload, readings, sampled_ns, size"
_TYPES = (int, str, int, str, bytes, int, int, int)

RowTuple = tuple[int, str, int, str, bytes, int, int, int]


@dataclass
class Recovery:
    """What `recover_buffer` found and did."""

    path: Path
    problem: str | None  # SQLite's words for the damage; None: the file was fine, untouched
    aside: Path | None = None  # where the damaged file went
    recovered: int = 0
    lost: int | None = None  # exact when the damaged file could still count its rows
    rescued: int = 0  # rows read one by one inside damaged spans
    unreadable: list[tuple[int, int | None]] = field(default_factory=list)  # id spans; None: on
    epoch: str = ""
    epoch_kept: bool = True
    seqs: dict[str, int] = field(default_factory=dict)
    seq_floor: int = 0  # where machines the file no longer names start numbering

    def report(self) -> list[str]:
        """Lines for the operator."""
        if self.problem is None:
            return [f"buffer     {self.path} is not damaged: nothing changed"]
        lines = [f"buffer     {self.path} was damaged ({self.problem})",
                 f"kept       {self.aside} (the damaged file; never deleted: remove it once "
                 "nobody needs it)",
                 f"recovered  {self.recovered} batches, delivered by the next `edge-agent run`"]
        # Spans of row ids in damaged pages (what could be read one by one there is recovered).
        spans = ", ".join(f"{lo}-{hi}" if hi is not None else f"{lo} on"
                          for lo, hi in self.unreadable[:8])
        more = f" and {len(self.unreadable) - 8} more" if len(self.unreadable) > 8 else ""
        if self.lost is not None:
            lines.append(f"lost       {self.lost} batches"
                         + (f" (damaged row ids {spans}{more})" if spans else ""))
        elif self.unreadable and all(hi is not None for _, hi in self.unreadable):
            # Ids there may also belong to batches delivered (and deleted) long ago.
            at_most = sum(hi - lo + 1 for lo, hi in self.unreadable if hi is not None)
            lines.append(f"lost       at most {at_most - self.rescued} batches (the damaged file "
                         f"cannot count its rows; damaged row ids {spans}{more})")
        else:
            lines.append("lost       unknown: the damaged file cannot count its rows"
                         + (f"; damaged row ids {spans}{more}" if spans else ""))
        lines.append(f"epoch      {self.epoch} ("
                     + ("kept" if self.epoch_kept else
                        "new: the old epoch or seq state could not be read; recovered batches "
                        "keep their old epoch") + ")")
        for machine, seq in sorted(self.seqs.items()):
            lines.append(f"  {machine}: numbering continues after seq {seq}")
        if self.seq_floor:
            lines.append(f"  other machines: numbering starts after seq {self.seq_floor} (the "
                         "file's seq state was partly unreadable)")
        return lines


def recover_buffer(path: Path) -> Recovery:
    """Rebuild the buffer at `path` from what can be read of it, keeping the damaged file
    aside. BufferLocked while an agent (or another recovery) holds it."""
    if not path.exists():  # before the lock, which would create the folder and lock file
        raise FileNotFoundError(f"no buffer at {path}")
    lock = BufferLock.acquire(path)
    try:
        problem = _damage(path)
        if problem is None:
            return Recovery(path, None)
        return _rebuild(path, problem)
    finally:
        lock.release()


def _connect_ro(path: Path) -> sqlite3.Connection:
    # Read-only: reading never checkpoints or rewrites the damaged file.
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _damage(path: Path) -> str | None:
    """SQLite's description of the damage, or None when the file reads fine."""
    conn = _connect_ro(path)
    try:
        found = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if found != ["ok"]:
            return "; ".join(str(x) for x in found[:3])
        conn.execute("SELECT COUNT(*), SUM(size) FROM batches").fetchone()
        conn.execute("SELECT * FROM machines").fetchall()
        conn.execute("SELECT * FROM meta").fetchall()
    except sqlite3.Error as exc:
        explained = buffer_error(path, exc)
        if isinstance(explained, BufferUnusable) and explained.kind == "damaged":
            return str(exc)
        if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
            return None  # an empty file: the agent creates the tables
        raise explained from exc
    finally:
        conn.close()
    return None


def _family(path: Path) -> list[Path]:
    """A database file and the WAL and shared-memory files SQLite keeps beside it."""
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _aside_name(path: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while any(p.exists() for p in _family(aside)):  # two recoveries within one second
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
        n += 1
    return aside


def _rebuild(path: Path, problem: str) -> Recovery:
    temp = path.with_name(path.name + ".recovering")
    for leftover in _family(temp):
        leftover.unlink(missing_ok=True)  # our own unfinished output of an interrupted run
    result = Recovery(path, problem)
    src = _connect_ro(path)
    try:
        dst = open_database(temp)
        try:
            _copy(src, dst, result)
            dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            dst.close()
    finally:
        src.close()
    # The new file is complete and synced (synchronous=FULL, checkpointed) before the damaged
    # one moves: an interruption up to here leaves the damaged file where it was.
    result.aside = _aside_name(path)
    for old, new in zip(_family(path), _family(result.aside)):
        if old.exists():
            os.rename(old, new)
    for old, new in zip(_family(temp), _family(path)):
        if old.exists():
            os.rename(old, new)
    _sync_dir(path.parent)
    return result


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # the renames survive a power cut
    finally:
        os.close(fd)


def _copy(src: sqlite3.Connection, dst: sqlite3.Connection, result: Recovery) -> None:
    meta, meta_complete = _read_meta(src)
    machines, machines_complete = _read_machines(src)
    sequence = _one(src, "SELECT seq FROM sqlite_sequence WHERE name='batches'")
    count = _one(src, "SELECT COUNT(*) FROM batches")

    top_seq: dict[str, int] = {}
    max_id, payload_epoch = 0, ""
    dst.execute("BEGIN IMMEDIATE")
    pending = 0
    for row in _salvage(src, result):
        dst.execute(f"INSERT INTO batches ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
        row_id, machine, seq = row[0], row[1], row[2]
        top_seq[machine] = max(top_seq.get(machine, 0), seq)
        max_id = max(max_id, row_id)
        if not payload_epoch:
            payload_epoch = _epoch_of(row[4])
        result.recovered += 1
        pending += 1
        if pending >= _COMMIT_EVERY:
            dst.execute("COMMIT")
            dst.execute("BEGIN IMMEDIATE")
            pending = 0
    if count is not None:
        result.lost = max(0, count - result.recovered)

    # seq state. A machine's seq never exceeds the ids the file handed out (one per batch)
    # plus the highest seq a previous recovery started from (seq_base).
    old_floor, old_base = _int(meta.get("seq_floor")), _int(meta.get("seq_base"))
    seqs = {m: max(row[0], top_seq.get(m, 0)) for m, row in machines.items()}
    floor = old_floor
    bound_known = True
    if not (machines_complete and meta_complete):
        # Machines whose row is gone (or a previous recovery's floor, if meta is) may have
        # numbered up to here: they continue above it.
        bound_known = sequence is not None and meta_complete
        floor = max(old_base + (sequence or 0), max_id, old_floor, *seqs.values(),
                    *top_seq.values(), 0)
    for machine, seq in top_seq.items():
        if machine not in seqs:
            seqs[machine] = max(seq, floor)
    result.seqs, result.seq_floor = seqs, floor

    epoch = meta.get("epoch") or payload_epoch
    result.epoch_kept = bool(epoch) and bound_known
    result.epoch = epoch if result.epoch_kept else uuid.uuid4().hex
    base = max(old_base, floor, *seqs.values(), 0)
    values = {"epoch": result.epoch, "created_ns": meta.get("created_ns") or str(time.time_ns()),
              "recovered_ns": str(time.time_ns()), "recovery_problem": result.problem or "",
              "seq_base": str(base)}
    if floor:
        values["seq_floor"] = str(floor)
    dst.executemany("INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value", values.items())
    dst.executemany(
        "INSERT INTO machines (machine, seq, dropped_batches, dropped_readings) "
        "VALUES (?, ?, ?, ?)",
        [(m, seq, *machines.get(m, (0, 0, 0))[1:]) for m, seq in seqs.items()])
    # New batches get ids above every id the damaged file used: delivery order stays id order.
    dst.execute("DELETE FROM sqlite_sequence WHERE name='batches'")
    dst.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('batches', ?)",
                (max(sequence or 0, max_id),))
    dst.execute("COMMIT")


def _one(conn: sqlite3.Connection, sql: str, *params: Any) -> Any:
    """The first column of the first row, or None when there is none or it cannot be read."""
    try:
        row = conn.execute(sql, params).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _read_meta(conn: sqlite3.Connection) -> tuple[dict[str, str], bool]:
    try:
        return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}, True
    except sqlite3.Error:
        pass
    found = {}
    for key in ("epoch", "created_ns", "seq_floor", "seq_base"):
        value = _one(conn, "SELECT value FROM meta WHERE key=?", key)
        if value is not None:
            found[key] = str(value)
    return found, False


def _read_machines(conn: sqlite3.Connection) -> tuple[dict[str, tuple[int, int, int]], bool]:
    found: dict[str, tuple[int, int, int]] = {}
    try:
        for machine, seq, dropped, dropped_readings in conn.execute(
                "SELECT machine, seq, dropped_batches, dropped_readings FROM machines"):
            if isinstance(machine, str) and all(
                    isinstance(x, int) for x in (seq, dropped, dropped_readings)):
                found[machine] = (seq, dropped, dropped_readings)
    except sqlite3.Error:
        return found, False  # the rows read before the damage still count
    return found, True


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0  # a damaged value that still parsed as text


def _epoch_of(payload: bytes) -> str:
    try:
        epoch = decode(payload).get("epoch")
    except Exception:  # any garbage: this payload just does not tell
        return ""
    return epoch if isinstance(epoch, str) else ""


def _valid(row: tuple[Any, ...]) -> bool:
    """A row whose columns have their types and whose payload carries its own seq: a
    damaged page that still parses must not be delivered as a batch."""
    if len(row) != len(_TYPES) or not all(type(v) is t for v, t in zip(row, _TYPES)):
        return False
    try:
        doc = decode(row[4])
    except Exception:  # garbage bytes of any kind
        return False
    return isinstance(doc, dict) and doc.get("seq") == row[2]


def _salvage(src: sqlite3.Connection, result: Recovery) -> Iterator[RowTuple]:
    """Every readable, valid row in id order; the damaged id spans go to result.unreadable."""
    pos = 0
    while True:
        read = 0
        try:
            # Row by row, so that the rows before a damaged page in a chunk are kept.
            for row in src.execute(f"SELECT {_COLUMNS} FROM batches WHERE id > ? "
                                   "ORDER BY id LIMIT ?", (pos, _CHUNK)):
                read += 1
                pos = row[0]
                if _valid(row):
                    yield row
                else:
                    result.unreadable.append((pos, pos))
        except sqlite3.DatabaseError:
            end = _damage_end(src, pos)
            yield from _probe(src, pos, end, result)
            if end is None:
                return
            pos = end
            continue
        if read == 0:
            return


def _seek_ok(src: sqlite3.Connection, after: int) -> bool:
    try:
        src.execute("SELECT id FROM batches WHERE id > ? ORDER BY id LIMIT 1",
                    (after,)).fetchone()
    except sqlite3.DatabaseError:
        return False
    return True


def _damage_end(src: sqlite3.Connection, pos: int) -> int | None:
    """The smallest id after `pos` from which the table reads again (ids up to it sit in
    damaged pages), or None if it never does."""
    step, bad = 1, pos
    while not _seek_ok(src, pos + step):
        bad = pos + step
        step *= 2
        if pos + step >= 1 << 63:
            return None
    good = pos + step
    while good - bad > 1:
        middle = (bad + good) // 2
        if _seek_ok(src, middle):
            good = middle
        else:
            bad = middle
    return good


def _probe(src: sqlite3.Connection, pos: int, end: int | None,
           result: Recovery) -> Iterator[RowTuple]:
    """Rows of (pos, end] that can still be read one by one; records the span as damaged."""
    result.unreadable.append((pos + 1, end))
    if end is None or end - pos > _PROBE_SPAN:
        return
    for row_id in range(pos + 1, end + 1):
        try:
            row = src.execute(f"SELECT {_COLUMNS} FROM batches WHERE id = ?",
                              (row_id,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None and _valid(row):
            result.rescued += 1
            yield row
