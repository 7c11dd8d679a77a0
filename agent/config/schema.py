"""JSON Schema of the agent file and of a machine file (one variant per protocol)."""

from __future__ import annotations

from typing import Any, Mapping

from agent.config.models import AgentFile, machine_model
from drivers.base import DriverSpec


def full_schema(drivers: Mapping[str, DriverSpec]) -> dict[str, Any]:
    """{"agent": <schema of agent.yaml>, "machine": <schema of machines.d/*.yaml>}."""
    machines = [machine_model(spec).model_json_schema() for _, spec in sorted(drivers.items())]
    machine = machines[0] if len(machines) == 1 else {"oneOf": machines}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "agent": {**AgentFile.model_json_schema(), "title": "edge-agent agent.yaml"},
        "machine": {**machine, "title": "edge-agent machine file"},
    }
