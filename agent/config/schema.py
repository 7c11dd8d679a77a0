"""JSON Schema of the agent file and of a machine file (one variant per protocol)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agent.config.models import AgentFile, machine_model
from agent.config.templates import TEMPLATE_NAME
from drivers.base import DriverSpec


def full_schema(drivers: Mapping[str, DriverSpec]) -> dict[str, Any]:
    """{"agent": <schema of agent.yaml>, "machine": <schema of machines.d/*.yaml>}."""
    machine = _machine_schema([machine_model(spec) for _, spec in sorted(drivers.items())])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "agent": {**AgentFile.model_json_schema(), "title": "edge-agent agent.yaml"},
        "machine": {**machine, "title": "edge-agent machine file"},
    }


def _machine_schema(models: list[Any]) -> dict[str, Any]:
    """One self-contained schema: every protocol's machine model in `$defs`, the whole file
    `oneOf` them, and `connection` / `signals` spelled out so editors complete them."""
    defs: dict[str, Any] = {}
    refs = []
    # `use:` is read by the loader (templates.py) before validation, so no model has it.
    use = {"type": "string", "pattern": TEMPLATE_NAME.pattern,
           "description": "template this machine is based on (templates/<name>.yaml in the "
           "config folder, else a bundled one); the fields here override it"}
    for model in models:
        schema = model.model_json_schema()
        defs.update(schema.pop("$defs", {}))
        schema["properties"] = {"use": use, **schema["properties"]}
        defs[model.__name__] = schema
        refs.append({"$ref": f"#/$defs/{model.__name__}"})
    first = defs[models[0].__name__]
    properties = dict(first["properties"])
    properties["connection"] = {"oneOf": [defs[m.__name__]["properties"]["connection"] for m in models]}
    # Protocols that share a signal model (the Modbus family) list it once.
    items: dict[str, Any] = {}
    for m in models:
        ref = defs[m.__name__]["properties"]["signals"]["items"]
        body = {k: v for k, v in defs[ref["$ref"].rsplit("/", 1)[1]].items() if k != "title"}
        items.setdefault(json.dumps(body, sort_keys=True), ref)
    properties["signals"] = {"type": "array", "minItems": 1,
                             "items": {"oneOf": list(items.values())}}
    return {"type": "object", "properties": properties, "required": first["required"],
            "additionalProperties": False,
            "oneOf": refs, "$defs": defs}
