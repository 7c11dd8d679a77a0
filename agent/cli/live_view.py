"""What `edge-agent demo` shows live and `edge-agent status` prints: the agent's machines
(link up or down, execution state, key signals, readings/s, bad readings, last poll), its
uplink and its buffer backlog.

The numbers come from the agent's own Prometheus endpoint (`metrics.listen`), parsed with
prometheus_client's text parser; the demo adds what it sees on the broker (signal values).
One `AgentView` is built from both and rendered either as plain text lines or as a rich
table, so the demo and `status` show the same thing.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

# A signal that says what the machine is doing, by preference.
EXECUTION_SIGNALS = ("machine.state", "machine.production_status", "heater.state",
                     "x.tempctl.zone1.status", "program.state", "machine.mode")
# Values worth a glance, in order of preference; a machine shows its first few present.
KEY_SIGNALS = ("cycle.count", "press.stroke_count", "press.crank_angle", "press.force.total_peak",
               "motor.current", "spindle.speed.actual", "spindle.load", "program.name",
               "part_count.good", "cycle.time", "imm.cushion", "imm.injection_pressure.peak",
               "temperature.barrel.zone1", "forging.force.peak", "forging.blow_energy",
               "temperature.billet_exit", "heater.power", "billet.weight", "temperature.zone1",
               "temperature.zone2")
SIGNALS_SHOWN = 3
# Optional metrics: used when the agent exports them, derived otherwise.
_LAST_POLL_METRICS = ("edge_agent_last_poll_timestamp_seconds",
                      "edge_agent_machine_last_poll_timestamp_seconds")
_OLDEST_AGE_METRICS = ("edge_agent_buffer_oldest_age_seconds", "edge_agent_buffer_oldest_seconds")


class MetricsUnavailable(Exception):
    """The agent's metrics endpoint did not answer (or is not an agent's)."""


@dataclass
class MachineMetrics:
    connected: bool | None = None
    readings: float = 0.0
    bad: float = 0.0
    bad_reasons: dict[str, float] = field(default_factory=dict)
    polls: float = 0.0
    overruns: float = 0.0
    last_poll_ts: float | None = None  # unix seconds, if the agent exports it


@dataclass
class AgentMetrics:
    """One scrape of the agent's /metrics."""

    scraped_at: float  # time.time() of the scrape
    machines: dict[str, MachineMetrics] = field(default_factory=dict)
    buffer_batches: float | None = None
    buffer_bytes: float | None = None
    buffer_oldest_age: float | None = None
    buffer_dropped: float = 0.0
    uplink_connected: bool | None = None
    inflight: float | None = None
    published: float | None = None
    acked: float | None = None
    connects: float | None = None


def metrics_url(listen: str) -> str:
    """The URL of /metrics for `metrics.listen` (host:port); a wildcard host is asked on
    loopback."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/metrics"


def parse_metrics(text: str, scraped_at: float | None = None) -> AgentMetrics:
    """The agent's metrics from Prometheus text; raises MetricsUnavailable if there are none."""
    out = AgentMetrics(time.time() if scraped_at is None else scraped_at)
    found = False

    def machine(labels: Mapping[str, str]) -> MachineMetrics:
        return out.machines.setdefault(labels.get("machine", "?"), MachineMetrics())

    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise MetricsUnavailable(f"unreadable metrics: {exc}") from None
    for family in families:
        for s in family.samples:
            name, labels, value = s.name, s.labels, float(s.value)
            if not name.startswith("edge_agent_"):
                continue
            found = True
            if name == "edge_agent_machine_connected":
                machine(labels).connected = value >= 1
            elif name == "edge_agent_readings_total":
                machine(labels).readings += value
            elif name == "edge_agent_bad_readings_total":
                m = machine(labels)
                m.bad += value
                reason = labels.get("reason", "?")
                m.bad_reasons[reason] = m.bad_reasons.get(reason, 0.0) + value
            elif name == "edge_agent_polls_total":
                machine(labels).polls += value
            elif name == "edge_agent_poll_overruns_total":
                machine(labels).overruns += value
            elif name in _LAST_POLL_METRICS and value > 0:
                m = machine(labels)
                m.last_poll_ts = max(m.last_poll_ts or 0.0, value)
            elif name == "edge_agent_buffer_batches":
                out.buffer_batches = value
            elif name == "edge_agent_buffer_bytes":
                out.buffer_bytes = value
            elif name in _OLDEST_AGE_METRICS:
                out.buffer_oldest_age = value
            elif name == "edge_agent_buffer_dropped_batches_total":
                out.buffer_dropped += value
            elif name == "edge_agent_uplink_connected":
                out.uplink_connected = value >= 1
            elif name == "edge_agent_uplink_inflight":
                out.inflight = value
            elif name == "edge_agent_uplink_published_total":
                out.published = value
            elif name == "edge_agent_uplink_acked_total":
                out.acked = value
            elif name == "edge_agent_uplink_connects_total":
                out.connects = value
    if not found:
        raise MetricsUnavailable("no edge_agent_ metrics there (is it an edge-agent?)")
    return out


def scrape(url: str, timeout: float = 3.0) -> AgentMetrics:
    """GET /metrics and parse it; raises MetricsUnavailable with the reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        raise MetricsUnavailable(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise MetricsUnavailable(getattr(reason, "strerror", None) or str(reason)) from None
    except (OSError, TimeoutError) as exc:
        raise MetricsUnavailable(str(exc) or type(exc).__name__) from None
    return parse_metrics(text)


@dataclass
class MachineSignals:
    """What the demo saw of one machine on the broker."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # signal -> wire reading
    last_poll_ns: int = 0  # newest reading timestamp
    batches: int = 0
    readings: int = 0
    bad: int = 0

    def add(self, readings: Sequence[Mapping[str, Any]]) -> None:
        self.batches += 1
        self.readings += len(readings)
        for r in readings:
            self.values[r["signal"]] = dict(r)
            if r.get("quality") != "good":
                self.bad += 1
            ts = r.get("ts")
            if isinstance(ts, int) and ts > self.last_poll_ns:
                self.last_poll_ns = ts


@dataclass
class MachineRow:
    id: str
    link: str  # up, down, disabled, "-" (not reported yet)
    execution: str | None = None
    rate: float | None = None  # readings/s
    readings: int | None = None
    bad: int | None = None
    bad_reason: str | None = None  # the most frequent one
    last_poll: str = "-"
    signals: list[str] = field(default_factory=list)


@dataclass
class AgentView:
    machines: list[MachineRow]
    reachable: bool  # the metrics endpoint answered
    uplink: str  # connected, disconnected, "-"
    inflight: int | None = None
    backlog_batches: int | None = None
    backlog_bytes: int | None = None
    oldest_age: float | None = None
    dropped: int = 0
    published: int | None = None
    acked: int | None = None
    rate: float | None = None  # readings/s, all machines
    error: str | None = None  # why the metrics are missing

    @property
    def up(self) -> int:
        return sum(m.link == "up" for m in self.machines)

    @property
    def down(self) -> int:
        return sum(m.link in ("down", "-") for m in self.machines)


def _value_text(reading: Mapping[str, Any]) -> str:
    if reading.get("quality") != "good":
        return f"<{reading.get('reason') or reading.get('quality')}>"
    value = reading.get("value")
    if isinstance(value, float):
        shown = f"{value:.1f}" if math.isfinite(value) else str(value)
    elif isinstance(value, str) and len(value) > 24:
        shown = value[:23] + "…"
    else:
        shown = str(value)
    unit = reading.get("unit") or ""
    return f"{shown}{unit}" if unit in ("%",) or not unit else f"{shown} {unit}"


def _age_text(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def build_view(machines: Iterable[tuple[str, bool]], current: AgentMetrics | None,
               previous: AgentMetrics | None = None,
               seen: Mapping[str, MachineSignals] | None = None,
               oldest_age: float | None = None, error: str | None = None,
               now: float | None = None) -> AgentView:
    """Combine the configured machines (id, enabled), the latest scrape (and the one before,
    for rates and last polls), what was seen on the broker, and the buffer's oldest batch."""
    now = time.time() if now is None else now
    dt = (current.scraped_at - previous.scraped_at) if current and previous else 0.0
    rows = []
    total_rate = 0.0 if dt > 0 else None
    for machine_id, enabled in machines:
        m = current.machines.get(machine_id) if current else None
        p = previous.machines.get(machine_id) if previous else None
        s = seen.get(machine_id) if seen else None
        if not enabled:
            link = "disabled"
        elif m is None or m.connected is None:
            link = "-"
        else:
            link = "up" if m.connected else "down"
        row = MachineRow(machine_id, link)
        if m is not None:
            row.readings, row.bad = int(m.readings), int(m.bad)
            if m.bad_reasons:
                reason, count = max(m.bad_reasons.items(), key=lambda kv: kv[1])
                row.bad_reason = reason if count > 0 else None
            if dt > 0:
                row.rate = max(0.0, (m.readings - (p.readings if p else 0.0)) / dt)
                total_rate = (total_rate or 0.0) + row.rate
        elif s is not None:
            row.readings, row.bad = s.readings, s.bad
        # The last poll: exported by the agent, else the newest reading seen on the broker,
        # else whether the poll counter moved between the two scrapes.
        if m is not None and m.last_poll_ts:
            row.last_poll = _age_text(now - m.last_poll_ts)
        elif s is not None and s.last_poll_ns:
            row.last_poll = _age_text(now - s.last_poll_ns / 1e9)
        elif m is not None and dt > 0:
            moved = m.polls > (p.polls if p else 0.0)
            row.last_poll = f"within {dt:.1f} s" if moved else f"none in {dt:.1f} s"
        if s is not None:
            # The first one present, preferring a named state over a bare number.
            present = [s.values[n] for n in EXECUTION_SIGNALS if n in s.values]
            named = [r for r in present if isinstance(r.get("value"), str)]
            if present:
                row.execution = _value_text((named or present)[0])
            for name in KEY_SIGNALS:
                if name in s.values and len(row.signals) < SIGNALS_SHOWN:
                    row.signals.append(f"{name}={_value_text(s.values[name])}")
        rows.append(row)
    view = AgentView(rows, reachable=current is not None, uplink="-", rate=total_rate,
                     error=error, oldest_age=oldest_age)
    if current is not None:
        if current.uplink_connected is not None:
            view.uplink = "connected" if current.uplink_connected else "disconnected"
        view.inflight = _int(current.inflight)
        view.backlog_batches = _int(current.buffer_batches)
        view.backlog_bytes = _int(current.buffer_bytes)
        view.dropped = int(current.buffer_dropped)
        view.published, view.acked = _int(current.published), _int(current.acked)
        if current.buffer_oldest_age is not None:
            view.oldest_age = current.buffer_oldest_age
    return view


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def size_text(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _opt(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _bad_text(row: MachineRow) -> str:
    if row.bad is None:
        return "-"
    return f"{row.bad} ({row.bad_reason})" if row.bad and row.bad_reason else str(row.bad)


COLUMNS = ("MACHINE", "LINK", "STATE", "READINGS/S", "READINGS", "BAD", "LAST POLL", "SIGNALS")


def table_rows(view: AgentView, with_signals: bool) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the machine table (STATE and SIGNALS only with broker data)."""
    header = list(COLUMNS if with_signals else
                  [c for c in COLUMNS if c not in ("STATE", "SIGNALS")])
    rows = []
    for r in view.machines:
        cells = [r.id, r.link]
        if with_signals:
            cells.append(r.execution or "-")
        cells += [_opt(r.rate, "{:.1f}"), _opt(r.readings), _bad_text(r), r.last_poll]
        if with_signals:
            cells.append("  ".join(r.signals) or "-")
        rows.append(cells)
    return header, rows


def agent_lines(view: AgentView) -> list[str]:
    """The agent-wide part: uplink, backlog, machines up/down."""
    if not view.reachable:
        return [f"metrics    unavailable{': ' + view.error if view.error else ''}"]
    oldest = ("" if view.oldest_age is None or not view.backlog_batches
              else f", oldest {view.oldest_age:.1f} s")
    dropped = f", {view.dropped} dropped" if view.dropped else ""
    acked = "" if view.acked is None else f", acked {view.acked}"
    published = "" if view.published is None else f", published {view.published}"
    rate = "" if view.rate is None else f", {view.rate:.0f} readings/s"
    return [
        f"uplink     {view.uplink}, in-flight {_opt(view.inflight)}{published}{acked}",
        f"backlog    {_opt(view.backlog_batches)} batches, {size_text(view.backlog_bytes)}"
        f"{oldest}{dropped}",
        f"machines   {view.up} up, {view.down} down{rate}",
    ]


def plain_lines(view: AgentView, with_signals: bool = False) -> list[str]:
    """The whole view as aligned plain text."""
    header, rows = table_rows(view, with_signals)
    widths = [max(len(c) for c in column) for column in zip(header, *rows)]
    out = agent_lines(view)
    for cells in [header, *rows]:
        text = "  ".join(c.ljust(w) if i < len(cells) - 1 else c
                         for i, (c, w) in enumerate(zip(cells, widths)))
        out.append("  " + text.rstrip())
    return out


def rich_view(view: AgentView, title: str, footer: Sequence[str] = (), width: int = 160) -> Any:
    """The view as a rich renderable: the agent-wide lines, a table of machines, and the key
    signals in the table on a wide terminal (`width` columns) or under it otherwise."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    wide = width >= 130
    header, rows = table_rows(view, with_signals=True)
    if not wide:
        header = header[:-1]
    table = Table(title=title, title_justify="left", header_style="bold")
    for name in header:
        table.add_column(name.lower().replace("readings/s", "rdg/s"),
                         justify="right" if name in ("READINGS/S", "READINGS") else "left",
                         no_wrap=name != "SIGNALS",
                         overflow="fold" if name == "SIGNALS" else "ellipsis")
    styles = {"up": "green", "down": "bold red", "-": "yellow", "disabled": "dim"}
    below: list[Any] = []
    for row, cells in zip(view.machines, rows):
        rendered: list[Any] = list(cells[:len(header)])
        rendered[1] = Text(cells[1], style=styles.get(cells[1], ""))
        if row.bad:
            rendered[5] = Text(cells[5], style="red")
        table.add_row(*rendered)
        if not wide and row.signals:
            line = Text(row.id, style="bold")
            line.append("  " + "  ".join(row.signals))
            below.append(line)
    lines = [Text(line) for line in agent_lines(view)]
    if view.reachable and view.uplink != "connected":
        lines[0].stylize("bold red")
    return Group(*lines, table, *below, *[Text(f, style="dim") for f in footer])
