"""What every command of the CLI shares: its exit codes and loading the config folder with
each error printed as `file:line: field: message`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config.loader import LoadedConfig

EXIT_OK = 0
EXIT_ERROR = 1  # the command ran and failed (a damaged buffer, a device that did not answer)
EXIT_CONFIG = 2  # the config, the command line or the machine's setup must change first


def load_or_report(config_dir: Path) -> LoadedConfig | None:
    """The loaded config; None after printing every error to stderr."""
    # Imported here: `edge-agent --help` and `sim` should not wait for pydantic's models.
    from agent.config.loader import ConfigInvalid, load_config
    from drivers.registry import DRIVERS
    try:
        return load_config(config_dir, DRIVERS)
    except ConfigInvalid as exc:
        for error in exc.errors:
            print(str(error), file=sys.stderr)
        print(f"{len(exc.errors)} error(s) in {config_dir}", file=sys.stderr)
        return None
