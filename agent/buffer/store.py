"""The durable buffer: SQLite in WAL mode, owned by one writer thread, group commit.

A batch counts as collected only once its transaction has committed. `seq` is assigned
inside that transaction, so sequence numbers are gap-free across crashes: a batch that was
never committed never got a number. Commits happen as soon as work is waiting, but at most
once per `commit_interval`, so a power cut loses at most that much plus one fsync.
One process at a time opens a buffer file (agent/buffer/lock.py); a damaged one is rebuilt
only by `edge-agent buffer recover` (agent/buffer/recover.py).
"""

from __future__ import annotations

import asyncio
import collections
import os
import queue
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from structlog.typing import FilteringBoundLogger as Log

from agent.buffer.lock import BufferLock
from agent.core.encoding import BatchCodec
from agent.core.model import Batch
from agent.runtime.metrics import Metrics

ROW_OVERHEAD = 48  # bytes a row costs beyond topic and payload (ids, seq, sizes, b-tree slack)
MAX_PENDING = 4096  # batches waiting for the writer thread before new ones are dropped
WAKE_AT = MAX_PENDING // 8  # batches that wake the writer before its commit is due
_ATTEMPTS = 3  # tries to make room on a full disk before a transaction's batches are lost

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS machines (
    machine TEXT PRIMARY KEY,
    seq INTEGER NOT NULL DEFAULT 0,
    dropped_batches INTEGER NOT NULL DEFAULT 0,
    dropped_readings INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    machine TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    readings INTEGER NOT NULL,
    sampled_ns INTEGER NOT NULL,
    size INTEGER NOT NULL
);
"""


class BufferUnusable(sqlite3.DatabaseError):
    """SQLite refused the buffer file: damaged, or locked by another process. The message
    names the file and what to do; a sqlite3.DatabaseError, so existing handlers apply."""

    def __init__(self, path: Path, cause: sqlite3.Error, kind: str) -> None:
        self.path, self.cause, self.kind = path, cause, kind
        self.sqlite_errorcode = getattr(cause, "sqlite_errorcode", -1)
        self.sqlite_errorname = getattr(cause, "sqlite_errorname", "")
        super().__init__(self.explain())

    def explain(self, recover_command: str = "edge-agent buffer recover -c CONFIG_DIR") -> str:
        """One line: the file, SQLite's words, and the fix (with the operator's command)."""
        if self.kind == "damaged":
            return (f"buffer {self.path} is damaged ({self.cause}): stop the agent and run "
                    f"`{recover_command}`; it keeps the damaged file aside and carries over "
                    "every batch it can still read")
        return (f"buffer {self.path} is locked ({self.cause}): another process holds it: "
                "close whatever has it open (a sqlite3 shell, a backup tool); the agent needs "
                "it to itself")


def buffer_error(path: Path, exc: BaseException) -> BaseException:
    """`exc` as a BufferUnusable if it means the file is damaged or locked, else unchanged."""
    if isinstance(exc, BufferUnusable) or not isinstance(exc, sqlite3.Error):
        return exc
    # The primary result code: extended codes (SQLITE_CORRUPT_INDEX, ...) carry it in the
    # low byte.
    code = getattr(exc, "sqlite_errorcode", -1) & 0xFF
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return BufferUnusable(path, exc, "damaged")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return BufferUnusable(path, exc, "locked")
    return exc


@dataclass(frozen=True, slots=True)
class Row:
    """A committed batch waiting for its PUBACK."""

    id: int
    machine: str
    seq: int
    topic: str
    payload: bytes
    sampled_ns: int


@dataclass(slots=True)
class MachineStats:
    seq: int
    dropped_batches: int
    dropped_readings: int


@dataclass(slots=True)
class BufferStats:
    epoch: str
    batches: int
    bytes: int
    oldest_ns: int | None
    machines: dict[str, MachineStats] = field(default_factory=dict)


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the buffer database with durable settings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsynced on every commit, so a committed batch survives power loss.
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(_SCHEMA)
    conn.execute("BEGIN IMMEDIATE")
    if conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone() is None:
        conn.execute("INSERT INTO meta VALUES ('epoch', ?)", (uuid.uuid4().hex,))
        conn.execute("INSERT INTO meta VALUES ('created_ns', ?)", (str(time.time_ns()),))
    conn.execute("COMMIT")
    return conn


def read_stats(conn: sqlite3.Connection) -> BufferStats:
    """Stats from an open buffer database (the agent's own or a read-only one)."""
    epoch_row = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
    count, size, oldest = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(sampled_ns) FROM batches").fetchone()
    stats = BufferStats(epoch_row[0] if epoch_row else "", count, size, oldest)
    for machine, seq, dropped, dropped_readings in conn.execute(
            "SELECT machine, seq, dropped_batches, dropped_readings FROM machines ORDER BY machine"):
        stats.machines[machine] = MachineStats(seq, dropped, dropped_readings)
    return stats


def stats_of_file(path: Path) -> BufferStats:
    """Stats of a buffer file, opened read-only (safe while the agent runs)."""
    if not path.exists():
        raise FileNotFoundError(f"no buffer at {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return read_stats(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise buffer_error(path, exc) from exc


class Buffer:
    """Async facade over the writer thread. `append` never blocks the event loop."""

    def __init__(self, path: Path, max_bytes: int, commit_interval: float, codec: BatchCodec,
                 log: Log, metrics: Metrics, owner: str = "") -> None:
        self.path = path
        self._owner = owner  # the agent id: the lock file names it to a refused second agent
        self._max_bytes = max_bytes
        self._interval = commit_interval
        self._codec = codec
        self._log = log
        self._metrics = metrics
        self._appends: collections.deque[Batch] = collections.deque()
        # Bounded by its users rather than by a maxsize: one fetch at a time, acks at most the
        # in-flight window, flush/stats/close once each; appends have their own bound.
        self._commands: queue.SimpleQueue[tuple[str, Any, asyncio.Future[Any] | None]] = (
            queue.SimpleQueue())
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.epoch = ""
        self.on_commit: Callable[[], None] = lambda: None
        self.committed_id = 0  # highest committed row id, as the event loop last heard it
        self.on_fatal: Callable[[BaseException], None] = lambda exc: None
        self.refused = 0  # batches append() turned away (overflow, closed)
        self.failure: BaseException | None = None  # what stopped the writer thread, if anything
        self.backlog: tuple[int, int] = (0, 0)  # batches and bytes waiting, as last committed
        # Owned by the writer thread once it runs:
        self._seqs: dict[str, int] = {}
        # Where a machine with no seq yet starts: above 0 only after `buffer recover` could
        # not read every machine's seq, so that no (machine, seq) is ever used twice.
        self._seq_floor = 0
        self._bytes = 0
        self._count = 0
        self._committed_max_id = 0
        self._in_tx = False
        self._seqs_at_begin: dict[str, int] = {}
        self._tx_batches: list[Batch] = []  # of the open transaction, to redo it after a failure
        self._tx_acks: list[int] = []
        self._closed = False  # set by close(): later appends are refused and counted
        self._taken: set[asyncio.Future[Any]] = set()  # of commands not answered yet
        self._gate = threading.Lock()  # orders queueing a command against the writer failing

    # ---- event-loop side -------------------------------------------------------------

    async def open(self) -> None:
        """Open the database and start the writer thread."""
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(opened,), name="buffer-writer",
                                        daemon=True)
        self._thread.start()
        await opened

    def append(self, batch: Batch) -> bool:
        """Queue a batch for the next commit (before open(): for the first one); False, and
        counted, if the writer is swamped, closed or dead."""
        if self._closed or self.failure is not None or (
                self._thread is not None and not self._thread.is_alive()):
            reason = "closed"
        elif len(self._appends) >= MAX_PENDING:
            reason = "overflow"
        else:
            self._appends.append(batch)
            # Within a transaction the writer wakes at its commit time anyway and inserts
            # what queued up meanwhile: one wake-up per commit instead of one per batch
            # (each costs both threads a futex call and a GIL hand-over). Read before the
            # writer clears _in_tx, which it does before looking at the queue again, so no
            # batch is left waiting.
            if not self._in_tx or len(self._appends) >= WAKE_AT:
                self._wake.set()
            return True
        self.refused += 1
        self._metrics.buffer_dropped.labels(reason).inc()
        self._metrics.buffer_dropped_readings.labels(reason).inc(batch.count)
        return False

    def ack(self, ids: list[int]) -> None:
        """Delete delivered batches (in the next commit)."""
        # Within a transaction it is taken with the commit that is due anyway.
        self._send("ack", ids, None, wake=not self._in_tx)

    async def fetch(self, after_id: int, limit: int) -> list[Row]:
        """Committed batches with id > after_id, oldest first, minus acked ones."""
        rows, _ = await self.fetch_upto(after_id, limit)
        return rows

    async def fetch_upto(self, after_id: int, limit: int) -> tuple[list[Row], int]:
        """Like fetch, plus the committed id the answer covers: with fewer rows than
        `limit`, nothing else committed up to that id is waiting."""
        return await self._call("fetch", (after_id, limit))  # type: ignore[no-any-return]

    async def flush(self) -> None:
        """Commit everything appended so far."""
        await self._call("flush", None)

    async def stats(self) -> BufferStats:
        return await self._call("stats", None)  # type: ignore[no-any-return]

    @property
    def alive(self) -> bool:
        # False from the moment the writer failed, not only once its thread has ended.
        return self._thread is not None and self._thread.is_alive() and self.failure is None

    @property
    def closed(self) -> bool:
        """True once close() began: appends are refused from then on."""
        return self._closed

    async def close(self) -> None:
        """Commit what is pending, checkpoint and stop the writer thread."""
        if self._thread is None:
            return
        self._closed = True
        if not self._thread.is_alive():
            self._thread = None
            return
        try:
            await self._call("close", None)
        except Exception:
            if self.failure is None:
                raise
            # The writer failed (and said so through on_fatal): nothing left to commit.
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None

    def _send(self, kind: str, arg: Any, future: asyncio.Future[Any] | None,
              wake: bool = True) -> None:
        self._commands.put((kind, arg, future))
        if wake:
            self._wake.set()

    async def _call(self, kind: str, arg: Any) -> Any:
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("buffer is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # Against a writer failing meanwhile: it answers every command queued before it
        # took the gate, and none is queued after (held for a check and a put, never longer).
        with self._gate:
            failed = self.failure
            if failed is None:
                self._send(kind, arg, future)
        if failed is not None:
            raise RuntimeError("buffer is closed") from failed
        return await future

    def _committed(self, max_id: int) -> None:
        self.committed_id = max(self.committed_id, max_id)
        self.on_commit()

    def _reply(self, future: asyncio.Future[Any] | None, result: Any = None,
               error: BaseException | None = None) -> None:
        if future is None or self._loop is None:
            return
        self._taken.discard(future)

        def settle() -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        self._loop.call_soon_threadsafe(settle)

    # ---- writer thread -----------------------------------------------------------------

    def _run(self, opened: asyncio.Future[None]) -> None:
        lock: BufferLock | None = None
        conn: sqlite3.Connection | None = None
        try:
            # First: a second agent must not touch the file at all (not even to open it).
            lock = BufferLock.acquire(self.path, self._owner)
            conn = open_database(self.path)
            stats = read_stats(conn)
            self.epoch = stats.epoch
            self._seqs = {m: s.seq for m, s in stats.machines.items()}
            floor = conn.execute("SELECT value FROM meta WHERE key='seq_floor'").fetchone()
            self._seq_floor = int(floor[0]) if floor else 0
            self._bytes, self._count = stats.bytes, stats.batches
            self._committed_max_id = conn.execute(
                "SELECT COALESCE(MAX(id), 0) FROM batches").fetchone()[0]
        except BaseException as exc:  # report to open() instead of dying silently
            if conn is not None:
                conn.close()
            if lock is not None:
                lock.release()
            self._reply(opened, error=buffer_error(self.path, exc))
            return
        self.committed_id = self._committed_max_id
        self._reply(opened)
        try:
            self._publish_gauges(conn)
            self._serve(conn)
        except BaseException as exc:
            # The buffer cannot be restarted under the agent's feet; the agent stops with an
            # error so that systemd restarts the whole process on a fresh connection.
            failure = buffer_error(self.path, exc)
            # Waiting callers (a fetch, a flush, close) get the error instead of waiting
            # forever, whether the writer had taken their command or not.
            with self._gate:
                self.failure = failure
                while True:
                    try:
                        future = self._commands.get_nowait()[2]
                    except queue.Empty:
                        break
                    if future is not None:
                        self._taken.add(future)
            for future in list(self._taken):
                self._reply(future, error=failure)
            self._log.critical("buffer writer failed", error=str(failure) or repr(failure),
                               buffer=str(self.path))
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.on_fatal, failure)
        finally:
            conn.close()
            lock.release()

    def _serve(self, conn: sqlite3.Connection) -> None:
        staged: list[asyncio.Future[Any] | None] = []  # flush replies, sent after the commit
        next_commit = 0.0
        closing: asyncio.Future[Any] | None = None
        while True:
            wait = max(0.0, next_commit - time.monotonic()) if self._in_tx else None
            if not self._appends and self._commands.empty():
                self._wake.wait(wait)
            self._wake.clear()

            self._take_appends(conn)
            force = False
            while True:
                try:
                    kind, arg, future = self._commands.get_nowait()
                except queue.Empty:
                    break
                if future is not None:
                    self._taken.add(future)
                if kind == "fetch":
                    self._reply(future, self._fetch(conn, *arg))
                elif kind == "stats":
                    self._reply(future, read_stats(conn))
                elif kind == "ack":
                    self._ack(conn, arg)
                else:
                    # flush or close: every batch appended before it was sent is in the deque
                    # by now (the loop thread appends, then sends), so it joins this commit.
                    self._take_appends(conn)
                    force = True
                    if kind == "close":
                        closing = future
                    else:
                        staged.append(future)

            if self._in_tx and (force or time.monotonic() >= next_commit):
                self._commit(conn)
                next_commit = time.monotonic() + self._interval
            for future in staged:
                self._reply(future)
            staged.clear()
            if closing is not None:
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error:
                    pass
                self._reply(closing)
                return

    def _begin(self, conn: sqlite3.Connection) -> None:
        if not self._in_tx:
            conn.execute("BEGIN IMMEDIATE")
            self._in_tx, self._seqs_at_begin = True, dict(self._seqs)
            self._tx_batches, self._tx_acks = [], []

    def _take_appends(self, conn: sqlite3.Connection) -> None:
        while self._appends:
            batch = self._appends.popleft()
            self._begin(conn)
            self._tx_batches.append(batch)
            try:
                self._insert(conn, batch)
            except sqlite3.Error as exc:
                self._recover(conn, exc)

    def _ack(self, conn: sqlite3.Connection, ids: list[int]) -> None:
        self._begin(conn)
        self._tx_acks.extend(ids)
        try:
            self._delete(conn, ids)
        except sqlite3.Error as exc:
            self._recover(conn, exc)

    def _commit(self, conn: sqlite3.Connection) -> None:
        for _ in range(_ATTEMPTS):
            if not self._in_tx:
                break  # a recovery gave up on this transaction (and counted its batches)
            try:
                # Each machine's last seq, once per commit, in the same transaction as its rows.
                conn.executemany(
                    "INSERT INTO machines (machine, seq) VALUES (?, ?) "
                    "ON CONFLICT(machine) DO UPDATE SET seq = excluded.seq",
                    [(m, self._seqs[m]) for m in {b.stream or b.machine for b in self._tx_batches}])
                self._enforce_bound(conn)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._recover(conn, exc)
                continue
            self._in_tx, self._tx_batches, self._tx_acks = False, [], []
            self._committed_max_id = conn.execute(
                "SELECT COALESCE(MAX(id), 0) FROM batches").fetchone()[0]
            self._metrics.buffer_commits.inc()
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._committed, self._committed_max_id)
            break
        else:
            self._give_up(conn, "commit kept failing")
        self._publish_gauges(conn)

    def _recover(self, conn: sqlite3.Connection, exc: sqlite3.Error) -> None:
        """After a failed statement or commit: roll back, and if the disk is full make room
        by dropping the oldest batches (committed on their own), then redo the transaction.
        Gives up, counting the transaction's batches as lost, after a few attempts or on any
        other error. SQLite may already have rolled back by itself (it does on SQLITE_FULL),
        so nothing of the failed transaction is trusted."""
        explained = buffer_error(self.path, exc)
        if isinstance(explained, BufferUnusable) and explained.kind == "damaged":
            # Every later transaction would fail too, losing batches one commit after
            # another: the writer dies instead, and the agent stops saying what to do.
            raise explained
        batches, acks = self._tx_batches, self._tx_acks
        for _ in range(_ATTEMPTS):
            self._abort(conn)
            if not (isinstance(exc, sqlite3.OperationalError)
                    and exc.sqlite_errorcode == sqlite3.SQLITE_FULL and self._count):
                break
            try:
                conn.execute("BEGIN IMMEDIATE")
                if acks:
                    self._delete(conn, acks)
                self._drop_oldest(conn, int(self._bytes * 0.9), "disk_full")
                conn.execute("COMMIT")
                self._begin(conn)
                self._tx_batches = list(batches)
                for batch in batches:
                    self._insert(conn, batch)
                return
            except sqlite3.Error as again:
                exc = again
        self._tx_batches, self._tx_acks = batches, acks
        self._give_up(conn, str(buffer_error(self.path, exc)))  # "locked": with what to do

    def _abort(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # already rolled back by SQLite
        self._seqs = dict(self._seqs_at_begin) if self._in_tx else self._seqs
        stats = read_stats(conn)
        self._bytes, self._count = stats.bytes, stats.batches
        self._in_tx = False

    def _give_up(self, conn: sqlite3.Connection, error: str) -> None:
        # The batches never got committed, so they never existed for a consumer (their
        # seqs go to the next batches: no gap); count them so the loss is not silent.
        batches = self._tx_batches
        if self._in_tx:
            self._abort(conn)
        self._tx_batches, self._tx_acks = [], []
        self._metrics.buffer_dropped.labels("write_failed").inc(len(batches))
        self._metrics.buffer_dropped_readings.labels("write_failed").inc(
            sum(b.count for b in batches))
        self._log.error("buffer write failed; batches lost", error=error, batches=len(batches),
                        buffer=str(self.path))

    def _insert(self, conn: sqlite3.Connection, batch: Batch) -> None:
        stream = batch.stream or batch.machine
        seq = self._seqs.get(stream, self._seq_floor) + 1
        payload = self._codec.frame(batch.machine, self.epoch, seq, batch.body, batch.key)
        size = len(payload) + len(batch.topic) + ROW_OVERHEAD
        conn.execute(
            "INSERT INTO batches (machine, seq, topic, payload, readings, sampled_ns, size) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (stream, seq, batch.topic, payload, batch.count, batch.sampled_ns, size))
        self._seqs[stream] = seq
        self._bytes += size
        self._count += 1

    def _delete(self, conn: sqlite3.Connection, ids: list[int]) -> None:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            sizes = conn.execute(f"DELETE FROM batches WHERE id IN ({marks}) RETURNING size",
                                 chunk).fetchall()
            self._count -= len(sizes)
            self._bytes -= sum(size for (size,) in sizes)

    def _fetch(self, conn: sqlite3.Connection, after_id: int,
               limit: int) -> tuple[list[Row], int]:
        upto = self._committed_max_id
        return [Row(*r) for r in conn.execute(
            "SELECT id, machine, seq, topic, payload, sampled_ns FROM batches "
            "WHERE id > ? AND id <= ? "
            "ORDER BY id LIMIT ?", (after_id, upto, limit))], upto

    def _enforce_bound(self, conn: sqlite3.Connection) -> None:
        if self._bytes > self._max_bytes:
            self._drop_oldest(conn, self._max_bytes, "buffer_full")

    def _drop_oldest(self, conn: sqlite3.Connection, target_bytes: int, reason: str) -> None:
        """Delete the oldest batches until the buffer holds at most `target_bytes` (at least
        one batch); count them per machine, in the metrics and in the log."""
        dropped: dict[str, list[int]] = {}
        total_batches = total_readings = 0
        while self._count and (self._bytes > target_bytes or not total_batches):
            rows = conn.execute(
                "SELECT id, machine, readings, size FROM batches ORDER BY id LIMIT 256").fetchall()
            if not rows:
                break
            for row_id, machine, readings, size in rows:
                if self._bytes <= target_bytes and total_batches:
                    break
                conn.execute("DELETE FROM batches WHERE id = ?", (row_id,))
                self._bytes -= size
                self._count -= 1
                counts = dropped.setdefault(machine, [0, 0])
                counts[0] += 1
                counts[1] += readings
                total_batches += 1
                total_readings += readings
        conn.executemany(
            "INSERT INTO machines (machine, seq, dropped_batches, dropped_readings) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(machine) DO UPDATE SET "
            "dropped_batches = dropped_batches + excluded.dropped_batches, "
            "dropped_readings = dropped_readings + excluded.dropped_readings",
            [(m, self._seqs.get(m, self._seq_floor), b, r) for m, (b, r) in dropped.items()])
        self._metrics.buffer_dropped.labels(reason).inc(total_batches)
        self._metrics.buffer_dropped_readings.labels(reason).inc(total_readings)
        event = ("buffer full: dropped oldest batches" if reason == "buffer_full"
                 else "disk full: dropped oldest batches")
        self._log.warning(event, batches=total_batches, readings=total_readings,
                          max_bytes=self._max_bytes, machines=sorted(dropped))

    def _publish_gauges(self, conn: sqlite3.Connection) -> None:
        # One tuple, replaced whole: the health thread reads it without a lock.
        self.backlog = (self._count, self._bytes)
        self._metrics.buffer_batches.set(self._count)
        self._metrics.buffer_bytes.set(self._bytes)
        # The oldest batch has the smallest id: a primary-key lookup, not a scan.
        row = conn.execute("SELECT sampled_ns FROM batches ORDER BY id LIMIT 1").fetchone()
        self._metrics.buffer_oldest_ns = row[0] if row else None


def buffer_path(config_root: Path, configured: str, state_dir: Path | None) -> Path:
    """Where the buffer lives: `state_dir` overrides the folder of the configured path;
    a relative path is relative to the config folder."""
    path = Path(os.path.expanduser(configured))
    if state_dir is not None:
        return state_dir / path.name
    return path if path.is_absolute() else config_root / path
