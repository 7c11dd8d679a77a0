"""The topic contract (docs/architecture.md): where each machine's and the agent's messages
go, for the uns profile ({prefix}/{site}/{area}/{line}/{machine}/...) and for Sparkplug B
(spBv1.0/<group>/<type>/<edge node>[/<device>]). Config validation checks these topics, the
runners and the uplinks publish on them: one place builds them.
"""

from __future__ import annotations

from typing import Any

NAMESPACE = "spBv1.0"


def topic_base(prefix: str, site: str, machine: Any) -> str:
    """{prefix}/{site}/{area}/{line}/{machine} of a machine (its model: area, line, id)."""
    return f"{prefix}/{site}/{machine.area}/{machine.line}/{machine.id}"


def status_topic(prefix: str, site: str, agent_id: str) -> str:
    """The agent's own retained status."""
    return f"{prefix}/{site}/_agent/{agent_id}/status"


class Topics:
    """The topics of one edge node."""

    def __init__(self, group: str, node: str) -> None:
        self.group, self.node = group, node
        self.nbirth = self._node("NBIRTH")
        self.ndeath = self._node("NDEATH")
        self.ndata = self._node("NDATA")
        self.ncmd = self._node("NCMD")
        self.dcmd_all = f"{NAMESPACE}/{group}/DCMD/{node}/+"

    def _node(self, kind: str) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}"

    def device(self, kind: str, device: str) -> str:
        """DBIRTH, DDATA, DDEATH or DCMD of one device."""
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}/{device}"

    def device_of(self, topic: str) -> str | None:
        """The device a DCMD topic addresses."""
        prefix = f"{NAMESPACE}/{self.group}/DCMD/{self.node}/"
        return topic[len(prefix):] if topic.startswith(prefix) else None


def state_topic(host: str) -> str:
    """Where a primary host application announces itself (Sparkplug 3.0)."""
    return f"{NAMESPACE}/STATE/{host}"
