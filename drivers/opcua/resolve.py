"""Resolve configured node references to NodeIds on a live session, once per session.

Namespace URIs are looked up in the server's NamespaceArray and browse paths go through
TranslateBrowsePathsToNodeIds (in chunks), so a server restart that renumbers its
namespaces changes nothing for the configuration.
"""

from __future__ import annotations

import base64
import uuid
from typing import Mapping, Sequence

from asyncua import ua
# From their defining modules: asyncua and asyncua.ua expose these only as implicit
# re-exports, which mypy --strict does not accept.
from asyncua.ua.object_ids import ObjectIds

from drivers.opcua.addressing import (
    STANDARD_ROOTS,
    BrowsePath,
    NodeRef,
    Step,
    is_node_id,
    parse_browse_path,
    parse_node_id,
)

ROOT = ua.NodeId(ObjectIds.RootFolder)
BASE_EVENT_TYPE = ua.NodeId(ObjectIds.BaseEventType)
# Fields of BaseEventType (and of conditions) live in namespace 0 whatever default_namespace says.
STANDARD_EVENT_FIELDS = {
    "EventId", "EventType", "SourceNode", "SourceName", "Time", "ReceiveTime", "LocalTime",
    "Message", "Severity", "ConditionName", "ConditionClassName", "BranchId", "Retain",
    "EnabledState", "ActiveState", "AckedState", "ConfirmedState", "Quality", "Comment",
}


class Unresolved(Exception):
    """A reference that does not exist on this server; the message says why."""


class NamespaceMap:
    """The server's namespace array plus the config's aliases and default namespace."""

    def __init__(self, namespace_array: Sequence[str], aliases: Mapping[str, str],
                 default_namespace: str | None) -> None:
        self._array = list(namespace_array)
        self._index = {uri: i for i, uri in enumerate(namespace_array)}
        self._aliases = dict(aliases)
        self._default = default_namespace

    def text(self, node: ua.NodeId) -> str:
        """`nsu=<URI>;s=...`: the form of a NodeId that survives namespace renumbering."""
        text = node.to_string()
        index = node.NamespaceIndex
        if index and index < len(self._array):
            return f"nsu={self._array[index]};{text.split(';', 1)[1]}"
        return text

    def index_of_uri(self, uri: str) -> int:
        index = self._index.get(uri)
        if index is None:
            raise Unresolved(f"namespace {uri!r} is not on the server")
        return index

    def step_index(self, step: Step, first_of_absolute: bool, event_field: bool) -> int:
        if step.alias is not None:
            if step.alias.isdigit():
                return int(step.alias)
            return self.index_of_uri(self._aliases[step.alias])
        if (first_of_absolute and step.name in STANDARD_ROOTS) or self._default is None:
            return 0
        if event_field and step.name in STANDARD_EVENT_FIELDS:
            return 0
        return self.index_of_uri(self._aliases.get(self._default, self._default))

    def qualified(self, path: BrowsePath, event_field: bool = False) -> list[ua.QualifiedName]:
        return [ua.QualifiedName(step.name, self.step_index(step, path.absolute and i == 0,
                                                            event_field))
                for i, step in enumerate(path.steps)]

    def node_id(self, ref: NodeRef) -> ua.NodeId:
        index = ref.index if ref.uri is None else self.index_of_uri(ref.uri)
        assert index is not None
        if ref.kind == "i":
            return ua.NodeId(int(ref.identifier), index, ua.NodeIdType.Numeric)
        if ref.kind == "s":
            return ua.NodeId(ref.identifier, index, ua.NodeIdType.String)
        if ref.kind == "g":
            try:
                return ua.NodeId(uuid.UUID(ref.identifier), index, ua.NodeIdType.Guid)
            except ValueError as exc:
                raise Unresolved(f"{ref.identifier!r} is not a GUID") from exc
        try:
            return ua.NodeId(base64.b64decode(ref.identifier, validate=True), index,
                             ua.NodeIdType.ByteString)
        except ValueError as exc:
            raise Unresolved(f"{ref.identifier!r} is not base64") from exc


def relative_path(names: Sequence[ua.QualifiedName]) -> ua.RelativePath:
    """Forward hierarchical references (any subtype), one element per browse name."""
    return ua.RelativePath(Elements=[
        ua.RelativePathElement(ReferenceTypeId=ua.NodeId(ObjectIds.HierarchicalReferences),
                               IsInverse=False, IncludeSubtypes=True, TargetName=name)
        for name in names
    ])


class Resolver:
    """Turns many references into NodeIds with as few requests as the server allows."""

    def __init__(self, uaclient: object, namespaces: NamespaceMap, chunk: int) -> None:
        self._ua = uaclient
        self._ns = namespaces
        self._chunk = max(1, chunk)

    async def resolve(self, references: Sequence[str], root: str | None = None
                      ) -> list[ua.NodeId | Unresolved]:
        """One NodeId (or the reason it does not resolve) per reference, in order."""
        out: list[ua.NodeId | Unresolved | None] = [None] * len(references)
        start = ROOT
        if root is not None and any(not is_node_id(r) and not r.startswith("/") for r in references):
            start_or_error = (await self.resolve([root]))[0]
            if isinstance(start_or_error, Unresolved):
                raise start_or_error
            start = start_or_error
        pending: list[tuple[int, ua.BrowsePath]] = []
        for i, text in enumerate(references):
            try:
                if is_node_id(text):
                    out[i] = self._ns.node_id(parse_node_id(text))
                    continue
                path = parse_browse_path(text, relative=True)
                pending.append((i, ua.BrowsePath(StartingNode=ROOT if path.absolute else start,
                                                 RelativePath=relative_path(self._ns.qualified(path)))))
            except Unresolved as exc:
                out[i] = exc
        for begin in range(0, len(pending), self._chunk):
            chunk = pending[begin:begin + self._chunk]
            results = await self._ua.translate_browsepaths_to_nodeids(  # type: ignore[attr-defined]
                [bp for _, bp in chunk])
            for (i, _), result in zip(chunk, results):
                status = result.StatusCode
                if not status.is_good() or not result.Targets:
                    out[i] = Unresolved(f"{references[i]!r} not found on the server "
                                        f"({status.name})")
                else:
                    target = result.Targets[0].TargetId
                    out[i] = ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)
        return out  # type: ignore[return-value]

    def event_field(self, text: str) -> list[ua.QualifiedName]:
        """The select/where browse path of an event field, relative to its event type."""
        return self._ns.qualified(parse_browse_path(text, relative=True), event_field=True)
