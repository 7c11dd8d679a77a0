"""A damaged buffer (agent/buffer/store.py errors, agent/buffer/recover.py): the agent names the file
and the fix instead of a traceback, and `edge-agent buffer recover` moves the damaged file
aside (never deleting it) and carries over what can still be read, with its epoch and seq,
so the next run delivers it and numbers nothing twice. Real agent processes and mosquitto;
the damage is garbage written over a real buffer file."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support.harness import (
    REPO,
    AgentConfig,
    AgentProcess,
    Broker,
    Simulator,
    Subscriber,
    buffer_stats,
    free_port,
    press_machine,
    wait_for,
)

PAGE = 4096  # SQLite's default page size, the buffer's


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`edge-agent ARGS` that is expected to finish by itself."""
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def started(agent: AgentProcess) -> bool:
    return any(line.get("event") == "agent started" for line in agent.logs())


def assert_names_file_and_fix(out: subprocess.CompletedProcess[str], buffer: Path,
                              problem: str, config: Path, state: Path) -> None:
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    [line] = out.stderr.strip().splitlines()
    assert str(buffer) in line and problem in line, line
    assert f"edge-agent buffer recover -c {config} --state-dir {state}" in line, line


def damaged_copies(state: Path) -> list[Path]:
    return sorted(p for p in state.glob("buffer.db.damaged-*") if re.search(r"\d{6}Z$", p.name))


def test_a_file_that_is_not_a_database_is_named_with_the_fix_and_recovered_on_request(
        tmp_path: Path) -> None:
    config = AgentConfig(tmp_path, free_port(), {"p": press_machine("p", free_port())}).write()
    state = tmp_path / "state"
    state.mkdir()
    buffer = state / "buffer.db"
    garbage = b"this is not a database, it is a log file someone copied here\n" * 200
    buffer.write_bytes(garbage)

    run = cli("run", "-c", str(config), "--state-dir", str(state))
    assert_names_file_and_fix(run, buffer, "file is not a database", config, state)
    stats = cli("buffer", "stats", "-c", str(config), "--state-dir", str(state))
    assert_names_file_and_fix(stats, buffer, "file is not a database", config, state)
    assert buffer.read_bytes() == garbage  # nothing touched it

    recover = cli("buffer", "recover", "-c", str(config), "--state-dir", str(state))
    assert recover.returncode == 0, recover.stderr
    [aside] = damaged_copies(state)
    assert aside.read_bytes() == garbage  # moved aside as it was, not deleted
    assert str(aside) in recover.stdout
    assert re.search(r"recovered\s+0 batches", recover.stdout), recover.stdout
    assert buffer_stats(config, state)["batches"] == 0

    agent = AgentProcess(config, state, tmp_path / "agent.log")
    try:
        wait_for(lambda: started(agent), 30, "the agent to start on the new buffer")
        wait_for(lambda: buffer_stats(config, state)["machines"].get("p", {}).get("seq"), 30,
                 "a batch committed to the new buffer")
    finally:
        assert agent.stop() == 0


def test_a_buffer_with_damaged_pages_is_recovered_and_delivered_without_reused_seqs(
        tmp_path: Path, broker: Broker) -> None:
    sim = Simulator(free_port())
    broker.stop()  # nothing is delivered (and deleted) while the buffer fills
    config = AgentConfig(
        tmp_path, broker.port, {"press-a": press_machine("press-a", sim.port, fast="20ms")},
        shutdown_grace="1s").write()
    state = tmp_path / "state"
    buffer = state / "buffer.db"
    agent = AgentProcess(config, state, tmp_path / "filling.log")
    try:
        wait_for(lambda: started(agent), 30, "the agent to start")
        # Recovering under a running agent is refused, and touches nothing.
        refused = cli("buffer", "recover", "-c", str(config), "--state-dir", str(state))
        assert refused.returncode == 2, refused.stderr
        assert str(buffer) in refused.stderr and f"pid {agent.proc.pid}" in refused.stderr
        assert "Traceback" not in refused.stderr and not damaged_copies(state)

        def pages() -> int:
            return buffer.stat().st_size // PAGE if buffer.exists() else 0
        wait_for(lambda: buffer_stats(config, state)["batches"] >= 600 and pages() >= 60, 120,
                 "a buffer of some 60 pages")
    finally:
        assert agent.stop() == 0
    before = buffer_stats(config, state)
    seqs_before = {stream: m["seq"] for stream, m in before["machines"].items()}
    # Nothing was delivered: every batch of each stream (telemetry, events) is there.
    assert before["batches"] == sum(seqs_before.values())
    last = seqs_before["press-a"]  # the telemetry stream, followed below

    # Garbage over three pages in the middle, where the batches are; the header and the
    # schema (the first pages) are intact.
    data = bytearray(buffer.read_bytes())
    middle = len(data) // PAGE // 2
    data[middle * PAGE:(middle + 3) * PAGE] = b"\xa5\x5a" * (3 * PAGE // 2)
    buffer.write_bytes(bytes(data))

    run = cli("run", "-c", str(config), "--state-dir", str(state))
    assert_names_file_and_fix(run, buffer, "database disk image is malformed", config, state)

    recover = cli("buffer", "recover", "-c", str(config), "--state-dir", str(state))
    assert recover.returncode == 0, recover.stderr
    [aside] = damaged_copies(state)
    assert aside.read_bytes() == bytes(data)  # kept exactly as it was
    assert str(aside) in recover.stdout
    found = re.search(r"recovered\s+(\d+) batches", recover.stdout)
    assert found, recover.stdout
    recovered = int(found[1])
    assert 0 < recovered < before["batches"], recover.stdout
    # Exact: ids are contiguous here, so the damaged id spans bound the loss exactly.
    assert re.search(rf"lost\s+(at most )?{before['batches'] - recovered} batches",
                     recover.stdout), recover.stdout

    # The new buffer holds the recovered batches as they were, and the seq state.
    after = buffer_stats(config, state)
    assert (after["epoch"], after["batches"]) == (before["epoch"], recovered)
    assert {stream: m["seq"] for stream, m in after["machines"].items()} == seqs_before
    conn = sqlite3.connect(f"file:{buffer}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT machine, seq FROM batches").fetchall()
    finally:
        conn.close()
    assert len(set(rows)) == recovered
    kept = {seq for stream, seq in rows if stream == "press-a"}
    assert kept and kept <= set(range(1, last + 1))

    # The next run delivers them, then numbers new batches after the last seq ever used.
    broker.start()
    sub = Subscriber(broker.port)
    agent = AgentProcess(config, state, tmp_path / "after.log")
    try:
        wait_for(lambda: kept <= set(sub.seqs("press-a")), 60, "every recovered batch")
        wait_for(lambda: max(sub.seqs("press-a")) >= last + 5, 30, "new batches")
    finally:
        assert agent.stop() == 0
        sim.stop()
    final = buffer_stats(config, state)["machines"]["press-a"]["seq"]
    wait_for(lambda: final in sub.seqs("press-a"), 10, "the last batch")
    sub.close()
    docs = sub.telemetry("press-a")
    assert {d["epoch"] for d in docs} == {before["epoch"]}
    seqs = {d["seq"] for d in docs}
    assert seqs == kept | set(range(last + 1, final + 1)), "lost seqs reappeared or new ones gap"
    payloads: dict[int, set[str]] = {}
    for d in docs:
        payloads.setdefault(d["seq"], set()).add(json.dumps(d, sort_keys=True))
    assert all(len(p) == 1 for p in payloads.values()), "a seq was used for two batches"
