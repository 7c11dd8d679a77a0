"""Node addressing in config: NodeId strings and browse paths, parsed without a server.

NodeIds: `nsu=<namespace URI>;s=...` (preferred: namespace indices change between server
restarts), `ns=<index>;i=...`, or `i=85` in namespace 0; identifier types i, s, g, b.
Browse paths: `/Objects/Machines/CNC-01/Monitoring` from the Root folder, or relative to a
configured root; a step is `Name`, `alias:Name` (alias from `namespaces`) or `2:Name`.
Resolution against a live session is in resolve.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NODE_ID_RE = re.compile(r"^(?:(?:ns=(?P<ns>\d{1,5})|nsu=(?P<nsu>[^;]+));)?(?P<kind>[isgb])=(?P<id>.+)$",
                         re.DOTALL)
# Standard top-level folders below Root: always namespace 0, whatever default_namespace says.
STANDARD_ROOTS = {"Objects", "Types", "Views", "Server"}


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A parsed NodeId string: namespace by index or by URI, identifier kind and text."""

    index: int | None
    uri: str | None
    kind: str  # i, s, g, b
    identifier: str


@dataclass(frozen=True, slots=True)
class Step:
    """One browse-path step: a browse name with an optional namespace alias or index."""

    alias: str | None
    name: str


@dataclass(frozen=True, slots=True)
class BrowsePath:
    absolute: bool
    steps: tuple[Step, ...]


def parse_node_id(text: str) -> NodeRef:
    """Parse a NodeId string (raises ValueError with the accepted forms)."""
    match = _NODE_ID_RE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a NodeId (use nsu=URI;s=Name, ns=2;i=1001 or i=85)")
    kind, identifier = match.group("kind"), match.group("id")
    if kind == "i" and not (identifier.isascii() and identifier.isdigit() and int(identifier) < 2**32):
        raise ValueError(f"{text!r}: a numeric identifier must be 0..4294967295")
    index = match.group("ns")
    if index is not None and int(index) > 65535:
        raise ValueError(f"{text!r}: a namespace index must be 0..65535")
    return NodeRef(int(index) if index is not None else (None if match.group("nsu") else 0),
                   match.group("nsu"), kind, identifier)


def parse_browse_path(text: str, relative: bool) -> BrowsePath:
    """Parse `/A/b:B/2:C` (absolute, from Root) or `A/B` (relative, when `relative`)."""
    raw = text.strip()
    absolute = raw.startswith("/")
    if not absolute and not relative:
        raise ValueError(f"{text!r} must be an absolute browse path starting with /")
    body = raw[1:] if absolute else raw
    if not body or any(part == "" for part in body.split("/")):
        raise ValueError(f"{text!r} is not a browse path (use /Objects/Folder/Variable)")
    steps = []
    for part in body.split("/"):
        alias, sep, name = part.partition(":")
        if not sep:
            alias, name = None, part  # type: ignore[assignment]
        elif not name or not (alias.isdigit() or alias.isidentifier()):
            raise ValueError(f"{text!r}: step {part!r} must be Name, alias:Name or index:Name")
        steps.append(Step(alias, name))
    return BrowsePath(absolute, tuple(steps))


def is_node_id(text: str) -> bool:
    """Whether a reference is written as a NodeId (else it is a browse path)."""
    return bool(_NODE_ID_RE.match(text.strip())) and not text.startswith("/")
