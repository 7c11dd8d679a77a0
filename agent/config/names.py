"""Limits on names that become MQTT topic levels, and on the topics built from them.

A name the broker cannot take is refused at validate: once accepted, every publish of it
fails and the uplink retries it forever while the backlog grows behind it.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from agent.core.topics import Topics, state_topic, status_topic, topic_base

# Per level (agent id, site, area, line, machine id, Sparkplug ids). Long enough for any
# naming scheme seen on a shop floor; short enough that every topic stays far below what
# brokers accept (AWS IoT takes 256 bytes) and stays readable in a dashboard.
MAX_NAME_CHARS = 64
# topic_prefix may hold several levels (`acme/plant-3/uns`).
MAX_PREFIX_CHARS = 128
# MQTT 3.1.1 and 5 (1.5.4): a topic is a UTF-8 string of at most 65535 bytes.
MAX_TOPIC_BYTES = 65535
# Longest suffixes published under a machine's {prefix}/{site}/{area}/{line}/{id}:
# agent/acquire/runner.py (telemetry, state, event) and agent/writeback/commands.py (cmd/reply).
UNS_SUFFIXES = ("/telemetry", "/state", "/event", "/cmd/reply")
# Sparkplug message types of a device and of the edge node (agent/publish/sparkplug/topics.py).
DEVICE_KINDS = ("DBIRTH", "DDEATH", "DDATA", "DCMD")


def topic_level_problem(value: str) -> str | None:
    """Why `value` cannot be one level of an MQTT topic (a Sparkplug id), or None.

    MQTT forbids U+0000 and surrogates and says a topic SHOULD NOT hold other control
    characters or noncharacters (brokers may drop the connection); '/', '+' and '#'
    would split the level or make it a wildcard."""
    if len(value) > MAX_NAME_CHARS:
        return f"is {len(value)} characters long; at most {MAX_NAME_CHARS}"
    for char in value:
        code = ord(char)
        if char in "/+#":
            return f"contains {char!r}: it would split the topic level or make it a wildcard"
        if 0xD800 <= code <= 0xDFFF:
            return f"contains U+{code:04X}, which is not valid UTF-8"
        if unicodedata.category(char) == "Cc":
            return (f"contains the control character U+{code:04X}: MQTT topics may not "
                    "hold control characters")
        if _noncharacter(code):
            return f"contains the noncharacter U+{code:04X}, which MQTT topics may not hold"
        if char.isspace():
            return f"contains whitespace (U+{code:04X})"
    return None


def _noncharacter(code: int) -> bool:
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def topic_problem(topic: str) -> str | None:
    """Why a broker would refuse to take `topic`, or None."""
    shown = topic[:60] + "..." if len(topic) > 60 else topic
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return f"the topic {shown!r} is not valid UTF-8"
    if size > MAX_TOPIC_BYTES:
        return f"the topic {shown} is {size} bytes long; MQTT allows at most {MAX_TOPIC_BYTES}"
    if "\0" in topic:
        return f"the topic {shown!r} holds U+0000, which MQTT does not allow"
    return None


def machine_topics(agent: Any, machine: Any) -> list[str]:
    """Every topic published or subscribed for `machine` (its model) under agent file `agent`."""
    base = topic_base(agent.mqtt.topic_prefix, agent.agent.site, machine)
    topics = [base + suffix for suffix in UNS_SUFFIXES]
    sparkplug = agent.mqtt.sparkplug
    if sparkplug is not None:
        node = Topics(sparkplug.group_id, sparkplug.edge_node_id or agent.agent.id)
        topics += [node.device(kind, machine.id) for kind in DEVICE_KINDS]
    return topics


def agent_topics(agent: Any) -> list[tuple[tuple[str, ...], str]]:
    """The topics of the agent itself, each with the field of agent.yaml an error about it
    names: its status topic, and its Sparkplug edge node's."""
    topics: list[tuple[tuple[str, ...], str]] = [
        (("agent", "id"), status_topic(agent.mqtt.topic_prefix, agent.agent.site, agent.agent.id))]
    sparkplug = agent.mqtt.sparkplug
    if sparkplug is not None:
        node = Topics(sparkplug.group_id, sparkplug.edge_node_id or agent.agent.id)
        topics += [(("mqtt", "sparkplug"), t)
                   for t in (node.nbirth, node.ndeath, node.ndata, node.ncmd)]
        if sparkplug.primary_host_id:
            topics.append((("mqtt", "sparkplug", "primary_host_id"),
                           state_topic(sparkplug.primary_host_id)))
    return topics
