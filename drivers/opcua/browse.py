"""`edge-agent browse`: print a server's address space as a tree, for commissioning.

Each line: browse name, NodeId (with its namespace URI, the form a machine file should
use), node class, and for variables the data type and current value.
"""

from __future__ import annotations

from typing import Any, Callable

from asyncua import ua
# From their defining modules: asyncua and asyncua.ua expose these only as implicit
# re-exports, which mypy --strict does not accept.
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds

from drivers.opcua.addressing import is_node_id, parse_browse_path
from drivers.opcua.codec import ValueCodec
from drivers.opcua.config import OpcUaConnection
from drivers.opcua.resolve import Unresolved
from drivers.opcua.session import Session

_HIERARCHICAL = ua.NodeId(ObjectIds.HierarchicalReferences)
_MAX_CHILDREN = 500  # per node: a tree is for reading, not for dumping a whole historian


async def browse(conn: OpcUaConnection, path: str, depth: int, emit: Callable[[str], None]) -> int:
    """Walk from `path` (browse path or NodeId) down `depth` levels; returns nodes printed."""
    session = Session(conn)
    await session.open()
    try:
        assert session.resolver is not None
        assert session.namespaces is not None
        walker = _Walker(session.uaclient, session.namespaces.text, emit)
        if is_node_id(path):
            start = (await session.resolver.resolve([path]))[0]
            if isinstance(start, Unresolved):
                raise ConnectionError(str(start))
        else:
            start = await walker.find(path)
        name = walker.node_text(start) if is_node_id(path) else path.rsplit("/", 1)[-1]
        await walker.walk(start, name, depth, "")
        return walker.count
    finally:
        await session.close()


class _Walker:
    def __init__(self, uaclient: Any, node_text: Callable[[ua.NodeId], str],
                 emit: Callable[[str], None]) -> None:
        self._ua, self.node_text, self._emit = uaclient, node_text, emit
        self._codec = ValueCodec(max_array=8)
        self.count = 0

    async def find(self, path: str) -> ua.NodeId:
        """Follow a browse path by names; a step without a namespace prefix matches a child
        of that name in any namespace (commissioning: the namespaces are not known yet)."""
        node = ua.NodeId(ObjectIds.RootFolder)
        if path.strip() == "/":
            return node
        try:
            steps = parse_browse_path(path, relative=False).steps
        except ValueError as exc:
            raise ConnectionError(str(exc)) from None
        for step in steps:
            matches = [(child, name) for child, name in await self._children(node)
                       if name.rsplit(":", 1)[-1] == step.name
                       and (step.alias is None or name == f"{step.alias}:{step.name}"
                            or (step.alias == "0" and ":" not in name))]
            if not matches:
                raise ConnectionError(f"{path!r}: no child {step.name!r} under {self.node_text(node)}")
            node = matches[0][0]
        return node

    async def walk(self, node: ua.NodeId, name: str, depth: int, prefix: str,
                   connector: str = "") -> None:
        attrs = await self._ua.read_attributes([node], AttributeIds.NodeClass)
        if not attrs[0].StatusCode.is_good():
            if not connector:  # the start node itself
                raise ConnectionError(f"{self.node_text(node)}: {attrs[0].StatusCode.name}")
            node_class = None
        else:
            node_class = attrs[0].Value.Value
        await self._line(node, name, node_class, prefix + connector)
        if depth <= 0:
            return
        children = await self._children(node)
        shown = children[:_MAX_CHILDREN]
        below = prefix + ("" if not connector else ("   " if connector == "└─ " else "│  "))
        for i, (child, child_name) in enumerate(shown):
            last = i == len(shown) - 1 and len(children) <= _MAX_CHILDREN
            await self.walk(child, child_name, depth - 1, below, "└─ " if last else "├─ ")
        if len(children) > _MAX_CHILDREN:
            self._emit(f"{below}└─ … {len(children) - _MAX_CHILDREN} more")

    async def _children(self, node: ua.NodeId) -> list[tuple[ua.NodeId, str]]:
        desc = ua.BrowseDescription(NodeId=node, BrowseDirection=ua.BrowseDirection.Forward,
                                    ReferenceTypeId=_HIERARCHICAL, IncludeSubtypes=True,
                                    NodeClassMask=0, ResultMask=63)
        results = await self._ua.browse(ua.BrowseParameters(NodesToBrowse=[desc]))
        out = []
        for ref in results[0].References if results else []:
            target = ref.NodeId
            qn = ref.BrowseName
            name = qn.Name if not qn.NamespaceIndex else f"{qn.NamespaceIndex}:{qn.Name}"
            out.append((ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType), name))
        return out

    async def _line(self, node: ua.NodeId, name: str, node_class: Any, indent: str) -> None:
        self.count += 1
        kind = ua.NodeClass(node_class).name if node_class is not None else "?"
        text = f"{indent}{name}  ({self.node_text(node)})  {kind}"
        if node_class == ua.NodeClass.Variable:
            values = await self._ua.read_attributes([node], AttributeIds.Value)
            types = await self._ua.read_attributes([node], AttributeIds.DataType)
            dtype = types[0].Value.Value if types[0].StatusCode.is_good() else None
            type_name = ObjectIdNames.get(dtype.Identifier, dtype.to_string()) \
                if isinstance(dtype, ua.NodeId) and dtype.NamespaceIndex == 0 else \
                (self.node_text(dtype) if isinstance(dtype, ua.NodeId) else "?")
            sample = self._codec.sample(values[0], 0)
            value = sample.reason if sample.reason and sample.value is None else repr(sample.value)
            text += f"  {type_name} = {value}"
        self._emit(text)
