"""YAML loading that keeps line numbers, so errors can name the line of a field."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, SequenceNode

# Largest config file read. A machine with 10,000 OPC UA tags (bench/opcua_subscribe.py) is
# about 0.8 MB; a 1 MiB file takes ~3 s and ~70 MB to load, so a reload of anything larger
# would stall the gateway, and nothing larger is a hand-written config.
MAX_FILE_BYTES = 1024 * 1024
# Most values aliases may add to a file when expanded. Aliases share one parsed object, but
# everything after the parser (plain copies, templates, validation, line look-ups) walks
# the expanded tree: nine lines of ten aliases each ("billion laughs") expand to 10^9 values.
# Reusing a mapping a few hundred times adds a few thousand.
MAX_ALIAS_NODES = 100_000


class YamlSyntaxError(ValueError):
    """The file is not valid YAML; carries the 1-based line where the parser stopped."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class YamlLimitError(YamlSyntaxError):
    """The file is too large, or its aliases expand too far, to be read safely."""


class _BoundedComposer(Composer):
    """ruamel's composer, counting the nodes each alias stands for (its anchor expanded), so
    an alias bomb is refused before anything walks it; an alias inside its own anchor (a
    recursive structure) is refused too, since it cannot be expanded at all."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._sizes: dict[int, int] = {}  # id(node) -> values in it, aliases expanded
        self._expanded = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            event = self.parser.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:  # else ruamel reports the undefined alias
                line = event.start_mark.line + 1
                size = self._sizes.get(id(target))
                if size is None:  # the anchor's node is still open: the alias is inside it
                    raise YamlLimitError(f"alias *{event.anchor} is inside its own anchor "
                                         "(a recursive structure cannot be a config)", line)
                self._expanded += size
                if self._expanded > MAX_ALIAS_NODES:
                    raise YamlLimitError(
                        f"alias *{event.anchor} makes the aliases of this file expand to more "
                        f"than {MAX_ALIAS_NODES} values, the most allowed", line)
            return super().compose_node(parent, index)
        node = super().compose_node(parent, index)
        if isinstance(node, MappingNode):
            self._sizes[id(node)] = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)]
                                            for k, v in node.value)
        elif isinstance(node, SequenceNode):
            self._sizes[id(node)] = 1 + sum(self._sizes[id(v)] for v in node.value)
        else:
            self._sizes[id(node)] = 1
        return node


@dataclass(frozen=True, slots=True)
class Location:
    """Where a value is written: the file as shown in errors, its line, and the value's
    location inside that file (which, in a machine built from a template, is not the
    location in the merged data: signal indexes differ per file)."""

    file: str
    line: int | None  # None: the file as a whole (it cannot be read)
    loc: tuple[str | int, ...]
    note: str = ""  # appended to messages about this place (names the template and its user)


class SourceDocument(Protocol):
    """What the loader needs of a config file: its data and where each value is written."""

    @property
    def data(self) -> Any: ...

    @property
    def digest(self) -> str: ...

    def line_of(self, loc: Sequence[str | int]) -> int: ...

    def where(self, loc: Sequence[str | int]) -> tuple[str, int]: ...

    def locate(self, loc: Sequence[str | int]) -> Location: ...


@dataclass(slots=True)
class YamlDocument:
    """Plain Python data of a YAML file plus the parsed tree for line look-ups."""

    data: Any
    tree: Any
    name: str = ""  # the file as shown in errors
    digest: str = ""  # sha256 of the file's bytes

    def where(self, loc: Sequence[str | int]) -> tuple[str, int]:
        """(file as shown, line) of `loc`."""
        return self.name, self.line_of(loc)

    def locate(self, loc: Sequence[str | int]) -> Location:
        """Location of `loc`; in a plain file that is `loc` itself."""
        return Location(self.name, self.line_of(loc), tuple(loc))

    def line_of(self, loc: Sequence[str | int]) -> int:
        """1-based line of the deepest part of `loc` present in the file."""
        node, line = self.tree, 1
        for part in loc:
            if isinstance(node, CommentedMap) and part in node:
                child = node[part]
                if isinstance(child, (CommentedMap, CommentedSeq)):
                    line = node.lc.key(part)[0] + 1
                else:
                    line = node.lc.value(part)[0] + 1
                node = child
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                line = node.lc.item(part)[0] + 1
                node = node[part]
            else:
                break
        return line


def _plain(node: Any) -> Any:
    # ruamel's round-trip types subclass int/float/str; hand pydantic plain values.
    if isinstance(node, dict):
        return {_plain(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if type(node).__name__ == "ScalarBoolean":
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def load_yaml(path: Path, name: str | None = None) -> YamlDocument:
    """Parse one YAML file, shown in errors as `name` (default: the path); raises
    YamlSyntaxError (with line; YamlLimitError for a file too large or an alias bomb),
    OSError or UnicodeDecodeError."""
    with path.open("rb") as file:
        # Read no more than the limit: the file may be huge, or endless (/dev/zero).
        raw = file.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            size = os.fstat(file.fileno()).st_size
            shown = size if size > MAX_FILE_BYTES else f"more than {MAX_FILE_BYTES}"
            raise YamlLimitError(f"the file is {shown} bytes; a config file may have at most "
                                 f"{MAX_FILE_BYTES} bytes ({MAX_FILE_BYTES / 1024**2:g} MiB)",
                                 None)
    # Decoded from the bytes that are hashed, so the digest is of exactly what was parsed.
    text = raw.decode("utf-8")
    yaml = YAML(typ="rt")
    yaml.Composer = _BoundedComposer
    try:
        tree = yaml.load(text)
    except YamlLimitError:
        raise
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(problem, mark.line + 1 if mark else None) from None
    except YAMLError as exc:
        raise YamlSyntaxError(str(exc).splitlines()[0], None) from None
    except (NotImplementedError, ValueError, TypeError, AttributeError, IndexError,
            RecursionError) as exc:
        # ruamel's round-trip parser has corners it does not handle (found by fuzzing: a
        # comment it cannot place raises NotImplementedError): still a file we cannot read.
        raise YamlSyntaxError(f"cannot parse this YAML: {exc}", None) from None
    return YamlDocument(_plain(tree), tree, str(path) if name is None else name,
                        hashlib.sha256(raw).hexdigest())
