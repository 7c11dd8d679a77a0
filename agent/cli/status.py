"""`edge-agent status -c DIR`: ask the running agent (its metrics endpoint) how it is doing.

Reads the config folder for `metrics.listen` and the machine list, scrapes /metrics twice
`--interval` seconds apart (for readings/s and whether each machine was polled meanwhile),
reads the buffer's oldest batch when the buffer file is found, and prints the same summary
as the demo's live view. Exit 0 when the agent answered, 1 when it did not, 2 on a bad
config folder.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from agent.cli.common import EXIT_OK, EXIT_ERROR, EXIT_CONFIG, load_or_report
from agent.cli.live_view import (AgentMetrics, MetricsUnavailable, build_view, metrics_url,
                             plain_lines, scrape)



def oldest_batch_age(path: Path) -> float | None:
    """Age in seconds of the oldest batch waiting in the buffer file, if it can be read."""
    import sqlite3

    from agent.buffer.store import stats_of_file
    try:
        stats = stats_of_file(path)
    except (OSError, sqlite3.Error):
        return None
    if not stats.oldest_ns:
        return 0.0 if stats.batches == 0 else None
    return max(0.0, (time.time_ns() - stats.oldest_ns) / 1e9)


def run_status(config_dir: Path, state_dir: Path | None, interval: float) -> int:
    from agent.buffer.store import buffer_path
    config = load_or_report(config_dir)
    if config is None:
        return EXIT_CONFIG
    listen = config.agent.metrics.listen
    if not listen:
        print(f"edge-agent status: metrics are off in {config_dir / 'agent.yaml'} "
              "(metrics.listen: null); status reads the running agent's metrics endpoint",
              file=sys.stderr)
        return EXIT_ERROR
    url = metrics_url(listen)
    try:
        first = scrape(url)
        second: AgentMetrics | None = None
        if interval > 0:
            time.sleep(interval)
            second = scrape(url)
    except MetricsUnavailable as exc:
        print(f"edge-agent status: no agent answers at {url} ({exc}); is it running with "
              f"-c {config_dir}?", file=sys.stderr)
        return EXIT_ERROR
    current, previous = (second, first) if second is not None else (first, None)
    path = buffer_path(config.root, config.agent.buffer.path, state_dir)
    view = build_view([(m.id, bool(m.model.enabled)) for m in config.machines], current,
                      previous, oldest_age=oldest_batch_age(path))
    print(f"agent      {config.agent.agent.id} at {url}")
    for line in plain_lines(view):
        print(line)
    return EXIT_OK
