"""Building a simulator's address space fast: folders, objects, variables, enumerations,
event types and notifiers, without asyncua's per-node checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from asyncua import Node, Server, ua
from asyncua.common.structures104 import new_enum


def ns0(identifier: int) -> ua.NodeId:
    """Numeric NodeId in namespace 0 (asyncua annotates NodeId with its own int subclasses)."""
    return ua.NodeId(identifier)  # type: ignore[arg-type]


def string_nodeid(identifier: str, ns: int) -> ua.NodeId:
    """String NodeId ``ns=<ns>;s=<identifier>``."""
    return ua.NodeId(identifier, ns)  # type: ignore[arg-type]





@dataclasses.dataclass(frozen=True)
class VarSpec:
    """A variable below the machine object: path segments are browse names (sim namespace)."""

    path: str
    vtype: ua.VariantType
    value: Any
    datatype: ua.NodeId | str | None = None  # str: a type created by the simulator (its NodeId)
    unit: str = ""  # documentation only

    @property
    def segments(self) -> list[str]:
        return self.path.split("/")


class AddressSpaceBuilder:
    """Creates nodes with stable string NodeIds ``<prefix>.<path with dots>`` in one namespace."""

    def __init__(self, server: Server, ns: int) -> None:
        self.server = server
        self.ns = ns
        self._objects: dict[str, ua.NodeId] = {}

    def nid(self, identifier: str) -> ua.NodeId:
        return string_nodeid(identifier, self.ns)

    def qn(self, name: str) -> ua.QualifiedName:
        return ua.QualifiedName(name, self.ns)

    async def _add(self, item: ua.AddNodesItem) -> ua.NodeId:
        results = await self.server.iserver.isession.add_nodes([item])
        results[0].StatusCode.check()
        return results[0].AddedNodeId

    def object_item(
        self,
        parent: ua.NodeId,
        nodeid: ua.NodeId,
        name: str,
        *,
        folder: bool = False,
        organizes: bool = False,
    ) -> ua.AddNodesItem:
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = nodeid
        item.BrowseName = self.qn(name)
        item.ParentNodeId = parent
        item.ReferenceTypeId = ns0(
            ua.ObjectIds.Organizes if organizes else ua.ObjectIds.HasComponent
        )
        item.NodeClass = ua.NodeClass.Object
        item.TypeDefinition = ns0(
            ua.ObjectIds.FolderType if folder else ua.ObjectIds.BaseObjectType
        )
        attrs = ua.ObjectAttributes()
        attrs.EventNotifier = 0
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Description = ua.LocalizedText(name)
        item.NodeAttributes = attrs
        return item

    def variable_item(
        self,
        parent: ua.NodeId,
        nodeid: ua.NodeId,
        name: str,
        variant: ua.Variant,
        datatype: ua.NodeId | None = None,
        description: str = "",
    ) -> ua.AddNodesItem:
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = nodeid
        item.BrowseName = self.qn(name)
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = parent
        item.ReferenceTypeId = ns0(ua.ObjectIds.HasComponent)
        item.TypeDefinition = ns0(ua.ObjectIds.BaseDataVariableType)
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Description = ua.LocalizedText(description or name)
        attrs.DataType = datatype or ua.NodeId(getattr(ua.ObjectIds, variant.VariantType.name))
        attrs.Value = variant
        if isinstance(variant.Value, list | tuple):
            attrs.ValueRank = ua.ValueRank.OneDimension
            attrs.ArrayDimensions = [len(variant.Value)]
        else:
            attrs.ValueRank = ua.ValueRank.Scalar
        attrs.AccessLevel = ua.AccessLevel.CurrentRead.mask
        attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
        attrs.Historizing = False
        item.NodeAttributes = attrs
        return item

    async def folder(self, parent: ua.NodeId, identifier: str, name: str) -> ua.NodeId:
        return await self._add(
            self.object_item(parent, self.nid(identifier), name, folder=True, organizes=True)
        )

    async def add_object(self, parent: ua.NodeId, identifier: str, name: str) -> ua.NodeId:
        """BaseObjectType object ``s=<identifier>`` organized by parent."""
        return await self._add(self.object_item(parent, self.nid(identifier), name, organizes=True))

    def add_children_fast(self, parent: ua.NodeId, items: Sequence[ua.AddNodesItem]) -> None:
        """Add many children of one parent in linear time (items' ParentNodeId is replaced).

        asyncua's add_nodes scans every reference of the parent for each new child, which is
        quadratic (about 35 s for 10000 variables). So the nodes are added unparented and the
        forward/inverse references between parent and child are appended directly.
        """
        aspace = self.server.iserver.aspace
        parent_data = aspace.get(parent)
        if parent_data is None:
            raise ua.UaError(f"parent {parent} does not exist")

        def attr(name: ua.AttributeIds) -> Any:
            dv = parent_data.attributes[name].value
            return dv.Value.Value if dv is not None and dv.Value is not None else None

        parent_type = next(
            (
                r.NodeId
                for r in parent_data.references
                if r.IsForward and r.ReferenceTypeId == ns0(ua.ObjectIds.HasTypeDefinition)
            ),
            ua.NodeId(),
        )
        for item in items:
            item.ParentNodeId = ua.NodeId()
        failed = list(self.server.iserver.node_mgt_service.try_add_nodes(list(items), check=False))
        if failed:
            raise ua.UaError(
                f"could not add {len(failed)} nodes, first {failed[0].RequestedNewNodeId}"
            )
        for item in items:
            child = aspace[item.RequestedNewNodeId]
            down = ua.ReferenceDescription()
            down.ReferenceTypeId = item.ReferenceTypeId
            down.IsForward = True
            down.NodeId = item.RequestedNewNodeId
            down.NodeClass = item.NodeClass
            down.BrowseName = item.BrowseName
            down.DisplayName = item.NodeAttributes.DisplayName
            down.TypeDefinition = item.TypeDefinition
            parent_data.references.append(down)
            up = ua.ReferenceDescription()
            up.ReferenceTypeId = item.ReferenceTypeId
            up.IsForward = False
            up.NodeId = parent
            up.NodeClass = attr(ua.AttributeIds.NodeClass)
            up.BrowseName = attr(ua.AttributeIds.BrowseName)
            up.DisplayName = attr(ua.AttributeIds.DisplayName)
            up.TypeDefinition = parent_type
            child.references.append(up)

    async def machine(self, parent: ua.NodeId, name: str) -> ua.NodeId:
        """The machine object (BaseObjectType, NodeId ``s=<name>``) organized by parent."""
        nodeid = await self._add(self.object_item(parent, self.nid(name), name, organizes=True))
        self._objects[name] = nodeid
        return nodeid

    async def ensure_object(self, prefix: str, segments: Sequence[str]) -> ua.NodeId:
        """Object for ``prefix/seg0/seg1...``, creating missing components on the way."""
        key = ".".join([prefix, *segments])
        found = self._objects.get(key)
        if found is not None:
            return found
        parent = (
            await self.ensure_object(prefix, segments[:-1]) if segments else self._objects[prefix]
        )
        nodeid = await self._add(self.object_item(parent, self.nid(key), segments[-1]))
        self._objects[key] = nodeid
        return nodeid

    async def variables(self, prefix: str, specs: Iterable[VarSpec]) -> dict[str, ua.NodeId]:
        """Create the variables below object ``prefix``; returns path -> NodeId."""
        out: dict[str, ua.NodeId] = {}
        for spec in specs:
            segments = spec.segments
            parent = await self.ensure_object(prefix, segments[:-1])
            datatype = self.nid(spec.datatype) if isinstance(spec.datatype, str) else spec.datatype
            nodeid = self.nid(".".join([prefix, *segments]))
            description = f"{spec.path} [{spec.unit}]" if spec.unit else spec.path
            await self._add(
                self.variable_item(
                    parent,
                    nodeid,
                    segments[-1],
                    ua.Variant(spec.value, spec.vtype),
                    datatype,
                    description,
                )
            )
            out[spec.path] = nodeid
        return out

    async def enum_type(self, name: str, fields: Sequence[str]) -> ua.NodeId:
        """Enumeration DataType ``s=<name>`` (values 0..n-1), DataTypeDefinition + EnumStrings."""
        dtype = await new_enum(self.server, self.nid(name), self.qn(name), list(fields))
        await dtype.add_property(
            self.nid(f"{name}.EnumStrings"),
            ua.QualifiedName("EnumStrings", 0),
            [ua.LocalizedText(f) for f in fields],
            varianttype=ua.VariantType.LocalizedText,
            datatype=ns0(ua.ObjectIds.LocalizedText),
        )
        return dtype.nodeid

    async def event_type(
        self, name: str, properties: Sequence[tuple[str, ua.VariantType, Any]]
    ) -> Node:
        """Subtype ``s=<name>`` of BaseEventType with (name, type, default) properties."""
        etype = await self.server.nodes.base_event_type.add_object_type(
            self.nid(name), self.qn(name)
        )
        for prop, vtype, default in properties:
            await etype.add_property(
                self.nid(f"{name}.{prop}"), self.qn(prop), default, varianttype=vtype
            )
        return etype

    async def make_notifier(self, nodeid: ua.NodeId, event_types: Iterable[ua.NodeId]) -> None:
        """Make nodeid an event source: EventNotifier bit, Server HasNotifier, GeneratesEvent."""
        node = self.server.get_node(nodeid)
        await node.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
        refs = []
        ref = ua.AddReferencesItem()
        ref.SourceNodeId = ns0(ua.ObjectIds.Server)
        ref.ReferenceTypeId = ns0(ua.ObjectIds.HasNotifier)
        ref.IsForward = True
        ref.TargetNodeId = nodeid
        ref.TargetNodeClass = ua.NodeClass.Object
        refs.append(ref)
        for etype in event_types:
            gen = ua.AddReferencesItem()
            gen.SourceNodeId = nodeid
            gen.ReferenceTypeId = ns0(ua.ObjectIds.GeneratesEvent)
            gen.IsForward = True
            gen.TargetNodeId = etype
            gen.TargetNodeClass = ua.NodeClass.ObjectType
            refs.append(gen)
        for status in await self.server.iserver.isession.add_references(refs):
            status.check()
