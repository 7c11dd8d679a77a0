"""Sparkplug B topic namespace: spBv1.0/<group>/<type>/<edge node>[/<device>]."""

from __future__ import annotations

NAMESPACE = "spBv1.0"


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
