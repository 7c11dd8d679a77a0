"""Device templates: a machine file says `use: <name>` and overrides the template field by field.

Search path (`template_dirs`): `<config root>/templates/<name>.yaml` first, so a site can add
templates or override bundled ones, then the bundled folder: the repo's `config/templates/`
or, once installed, `<sys.prefix>/share/edge-agent/templates/` (the first that exists). A
template may `use:` another one (a simulator's template built on a family template), at most
`MAX_DEPTH` deep and without cycles.

Merge (the template is the base, the using file overrides it): mappings merge key by key,
recursively; the top-level `signals` list merges by `name` (an entry naming a template signal
updates it in place, a new name is appended in file order, `{name: x, omit: true}` removes
template signal x); any other list and every scalar (null included) replaces the base value.
`use:` is stripped; a template may not set `id`, `area` or `line`, which identify one machine.

Provenance: every value of the merged data keeps the file, and the location inside that file,
it was written at (`TemplatedDocument.locate`), so an error names that file and line, and its
field path is the one in that file (a template's `signals[3]` may be the machine's
`signals[0]`). A merged mapping or signal entry as a whole belongs to the last file that
wrote part of it (the using file when it overrides any field), so an error about the entry
as a whole (a required field missing, two fields that contradict) points at the override.
Relative file names inside a template (certificates) resolve against the machine file's
folder, like the machine file's own, so certificates stay a per-site matter.

Displayed paths of template files, chosen to be short, clickable and unambiguous:
  - inside the config root: relative to it, like machine files (`templates/press-sim.yaml`);
  - in the repo's bundled folder: relative to the repo (`config/templates/press-sim.yaml`),
    which cannot be mistaken for a site template (those live in `<root>/templates/`);
  - anywhere else (the installed `share/edge-agent/templates`): the absolute path.
An error in a template file ends in ` (template press-sim, used by machines.d/press-07.yaml)`
(for a chain `template press-sim -> press-generic`, the last being the file shown), and an
error that stops a template from being read names the machine's `use:` line as well
(`used by machines.d/press-07.yaml:1`).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import agent
from agent.config.yaml_source import (
    Location,
    YamlDocument,
    YamlLimitError,
    YamlSyntaxError,
    load_yaml,
)

TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
MAX_DEPTH = 8
REPO_TEMPLATES = Path(agent.__file__).resolve().parent.parent / "config" / "templates"
INSTALLED_TEMPLATES = Path(sys.prefix) / "share" / "edge-agent" / "templates"
# They identify one machine: a template that set them would make every user the same machine.
MACHINE_ONLY = ("id", "area", "line")

Loc = tuple[str | int, ...]


def template_dirs(root: Path) -> list[Path]:
    """Folders searched for `use: <name>`, first match wins: the config root's `templates/`,
    then the bundled templates (the repo's `config/templates/`, else the installed copy)."""
    dirs = [root / "templates"]
    bundled = next((d for d in (REPO_TEMPLATES, INSTALLED_TEMPLATES) if d.is_dir()), None)
    if bundled is not None and not _same(bundled, dirs[0]):
        dirs.append(bundled)
    return dirs


def shown_path(path: Path, root: Path) -> str:
    """A template file or folder as errors show it (see the module docstring)."""
    target = path.resolve()
    if target.is_relative_to(root.resolve()):
        return str(target.relative_to(root.resolve()))
    repo = REPO_TEMPLATES.parent.parent
    if target.is_relative_to(REPO_TEMPLATES):
        return str(target.relative_to(repo))
    return str(path)


@dataclass(frozen=True, slots=True)
class Problem:
    """A template problem; the loader turns it into a ConfigError."""

    where: Location
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class _Layer:
    """One file of a machine's chain: the machine file or one of its templates."""

    doc: YamlDocument
    template: str | None  # None: the machine file
    note: str  # appended to messages about this file

    def locate(self, loc: Loc) -> Location:
        return Location(self.doc.name, self.doc.line_of(loc), loc, self.note)


@dataclass(slots=True)
class _Node:
    """A value of the merged data (children as _Nodes) and where it is written."""

    value: Any  # dict[Any, _Node], list[_Node] or a scalar
    layer: _Layer
    loc: Loc  # inside layer.doc


def _tree(value: Any, layer: _Layer, loc: Loc) -> _Node:
    if isinstance(value, dict):
        return _Node({k: _tree(v, layer, (*loc, k)) for k, v in value.items()}, layer, loc)
    if isinstance(value, list):
        return _Node([_tree(v, layer, (*loc, i)) for i, v in enumerate(value)], layer, loc)
    return _Node(value, layer, loc)


def _plain(node: _Node) -> Any:
    if isinstance(node.value, dict):
        return {k: _plain(v) for k, v in node.value.items()}
    if isinstance(node.value, list):
        return [_plain(v) for v in node.value]
    return node.value


class TemplatedDocument:
    """A machine file merged with its template chain; same interface as YamlDocument."""

    def __init__(self, root: _Node, files: Sequence[Path], digest: str) -> None:
        self._root = root
        self.data: Any = _plain(root)
        self.files = list(files)  # the template files of the chain, nearest first
        self.digest = digest

    def locate(self, loc: Sequence[str | int]) -> Location:
        """File, line and in-file location of the deepest part of `loc` in the merged data."""
        layer, inside = self._find(loc)
        return layer.locate(inside)

    def where(self, loc: Sequence[str | int]) -> tuple[str, int]:
        """(file as shown, line) of `loc`."""
        layer, inside = self._find(loc)
        return layer.doc.name, layer.doc.line_of(inside)

    def line_of(self, loc: Sequence[str | int]) -> int:
        """Line of `loc` in whichever file it comes from."""
        layer, inside = self._find(loc)
        return layer.doc.line_of(inside)

    def _find(self, loc: Sequence[str | int]) -> tuple[_Layer, Loc]:
        node, depth = self._root, 0
        for part in loc:
            child = _child(node, part)
            if child is None:
                break
            node, depth = child, depth + 1
        # The parts below the deepest present one (a missing field) keep their names, so the
        # field path reads `signals[0].address` in that file's own numbering.
        return node.layer, (*node.loc, *loc[depth:])


def _child(node: _Node, part: str | int) -> _Node | None:
    value = node.value
    if isinstance(value, dict):
        child = value.get(part)
        return child if isinstance(child, _Node) else None
    if isinstance(value, list) and isinstance(part, int) and not isinstance(part, bool):
        return value[part] if 0 <= part < len(value) else None
    return None


@dataclass(slots=True)
class TemplateLibrary:
    """Finds, reads (once per load) and merges templates for the machines of one config root."""

    root: Path
    dirs: list[Path] = field(default_factory=list)
    _read: dict[Path, YamlDocument | tuple[int | None, str]] = field(
        default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.dirs:
            self.dirs = template_dirs(self.root)

    def find(self, name: str) -> Path | None:
        """The file of template `name`, first in search order, or None."""
        for folder in self.dirs:
            path = folder / f"{name}.yaml"
            if path.is_file():
                return path
        return None

    def available(self) -> list[str]:
        """Names of every template on the search path."""
        return sorted({p.stem for d in self.dirs if d.is_dir() for p in d.glob("*.yaml")})

    def resolve(self, doc: YamlDocument, machine_rel: str,
                problems: list[Problem]) -> YamlDocument | TemplatedDocument | None:
        """`doc` itself when it uses no template, else it merged with its chain; None when
        the chain cannot be built (every reason is in `problems`)."""
        if not isinstance(doc.data, dict) or "use" not in doc.data:
            return doc
        layers = [_Layer(doc, None, "")]
        chain: list[str] = []
        files: list[Path] = []
        machine_use_line = doc.line_of(("use",))
        while "use" in layers[-1].doc.data:
            user = layers[-1]
            name = user.doc.data["use"]
            at = user.locate(("use",))
            if not isinstance(name, str) or not TEMPLATE_NAME.match(name):
                problems.append(Problem(at, "use", f"{name!r} is not a template name (lowercase "
                                        "letters, digits, '.', '_' and '-'; no folders)"))
                return None
            if name in chain:
                cycle = [*chain[chain.index(name):], name]
                problems.append(Problem(at, "use", f"template cycle: {' -> '.join(cycle)}"))
                return None
            if len(chain) == MAX_DEPTH:
                problems.append(Problem(at, "use", f"templates nest more than {MAX_DEPTH} "
                                        f"deep: {' -> '.join([*chain, name])}"))
                return None
            path = self.find(name)
            if path is None:
                problems.append(Problem(at, "use", self._not_found(name)))
                return None
            chain.append(name)
            files.append(path)
            shown = " -> ".join(chain)
            template = self._load(path)
            if not isinstance(template, YamlDocument):
                line, message = template
                note = f" (template {shown}, used by {machine_rel}:{machine_use_line})"
                problems.append(Problem(Location(shown_path(path, self.root), line, (), note),
                                        "", message))
                return None
            layers.append(_Layer(template, name, f" (template {shown}, used by {machine_rel})"))
        merged = self._merge_chain(layers, problems)
        digest = hashlib.sha256(doc.digest.encode())
        for layer in layers[1:]:
            digest.update(layer.doc.digest.encode())
        return TemplatedDocument(merged, files, digest.hexdigest())

    def _not_found(self, name: str) -> str:
        looked = ", ".join(shown_path(d, self.root) for d in self.dirs)
        names = self.available()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return (f"template {name!r} not found (looked in: {looked}; "
                f"available: {', '.join(names) or 'none'}){hint}")

    def _load(self, path: Path) -> YamlDocument | tuple[int | None, str]:
        """The parsed template, or (line, message) of why it cannot be used."""
        if path not in self._read:
            self._read[path] = _load_template(path, shown_path(path, self.root))
        return self._read[path]

    def _merge_chain(self, layers: list[_Layer], problems: list[Problem]) -> _Node:
        merged: _Node | None = None
        # From the deepest template up to the machine file, each over the merge below it.
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            data = {k: v for k, v in layer.doc.data.items() if k != "use"}
            if layer.template is not None:
                for key in MACHINE_ONLY:
                    if key in data:
                        problems.append(Problem(layer.locate((key,)), key,
                                                f"a template may not set {key}: it identifies "
                                                "one machine, so each machine file sets its own"))
                        del data[key]
            node = _tree(data, layer, ())
            base = merged if merged is not None else _Node({}, layer, ())
            used = layers[i + 1].template if i + 1 < len(layers) else None
            merged = _merge(base, node, (), used, problems)
        assert merged is not None  # layers always holds the machine file
        return merged


def _load_template(path: Path, shown: str) -> YamlDocument | tuple[int | None, str]:
    try:
        doc = load_yaml(path, shown)
    except FileNotFoundError:
        return None, "file not found"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read: {exc}"
    except YamlLimitError as exc:
        return exc.line, str(exc)
    except YamlSyntaxError as exc:
        return exc.line, f"invalid YAML: {exc}"
    if not isinstance(doc.data, dict):
        kind = "empty" if doc.data is None else f"a {type(doc.data).__name__}"
        return 1, f"expected a mapping of fields, the template is {kind}"
    return doc


def _merge(base: _Node, over: _Node, path: Loc, used: str | None,
           problems: list[Problem]) -> _Node:
    """`over` on top of `base`; `path` is the location in the merged data (only the top-level
    `signals` list merges by name); `used` is the template `over`'s file uses."""
    if not (isinstance(base.value, dict) and isinstance(over.value, dict)):
        return over
    merged = dict(base.value)
    for key, child in over.value.items():
        if path == () and key == "signals" and isinstance(child.value, list):
            below = merged.get(key)
            if below is None or not isinstance(below.value, list):
                below = _Node([], child.layer, child.loc)
            merged[key] = _merge_signals(below, child, used, problems)
        elif key in merged:
            merged[key] = _merge(merged[key], child, (*path, key), used, problems)
        else:
            merged[key] = child
    return _Node(merged, over.layer, over.loc)


def _merge_signals(base: _Node, over: _Node, used: str | None,
                   problems: list[Problem]) -> _Node:
    result: list[_Node | None] = list(base.value)
    position: dict[str, int] = {}
    for i, signal in enumerate(base.value):
        name = _name_of(signal)
        if name is not None:
            position.setdefault(name, i)  # a duplicate in the base is reported as such later
    touched: set[str] = set()
    for entry in over.value:
        name = _name_of(entry)
        if isinstance(entry.value, dict) and "omit" in entry.value:
            if _omit(entry, name, position, touched, used, problems):
                assert name is not None
                result[position[name]] = None
                touched.add(name)
            continue  # a wrong omit entry is reported and dropped, not validated as a signal
        if name is not None and name in position and name not in touched:
            i = position[name]
            signal = result[i]
            assert signal is not None
            result[i] = _merge(signal, entry, ("signals", i), used, problems)
            touched.add(name)
        else:
            # New, or a second entry for one name: appended, so the duplicate check reports it.
            result.append(entry)
    return _Node([s for s in result if s is not None], over.layer, over.loc)


def _omit(entry: _Node, name: str | None, position: dict[str, int], touched: set[str],
          used: str | None, problems: list[Problem]) -> bool:
    """Whether `entry` validly removes an inherited signal; reports why not."""
    layer, loc = entry.layer, entry.loc
    if entry.value["omit"].value is not True:
        problems.append(Problem(layer.locate((*loc, "omit")), _path((*loc, "omit")),
                                "only `omit: true` is allowed: it removes the template's "
                                "signal of this name"))
        return False
    extra = [k for k in entry.value if k not in ("name", "omit")]
    if extra:
        problems.append(Problem(layer.locate((*loc, extra[0])), _path((*loc, extra[0])),
                                "an omit entry takes only `name` and `omit`"))
        return False
    if name is None:
        problems.append(Problem(layer.locate(loc), _path((*loc, "name")),
                                "an omit entry needs the `name` of the signal to remove"))
        return False
    if used is None:
        problems.append(Problem(layer.locate((*loc, "omit")), _path((*loc, "omit")),
                                "this file uses no template, so there is no signal to omit"))
        return False
    if name in touched:
        problems.append(Problem(layer.locate((*loc, "name")), _path((*loc, "name")),
                                f"{name!r} is already overridden or omitted above in this file"))
        return False
    if name not in position:
        problems.append(Problem(layer.locate((*loc, "name")), _path((*loc, "name")),
                                f"{name!r} is not a signal of template {used!r}, "
                                "so it cannot be omitted"))
        return False
    return True


def _name_of(node: _Node) -> str | None:
    if isinstance(node.value, dict):
        name = node.value.get("name")
        if name is not None and isinstance(name.value, str):
            return name.value
    return None


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
