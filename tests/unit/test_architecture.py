"""The import rules of docs/architecture.md, read from the source (imports inside functions
included): no circle anywhere in agent/, drivers/ and simulators/, and the stages of agent/
import one way only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "drivers", "simulators")

# agent/'s stages, lowest first: a module imports its own stage or a lower one, never a
# stage beside it (acquire, writeback and publish meet only in app.py).
STAGES: dict[str, int] = {
    "agent.core": 0,
    "agent.signals": 1,
    "agent.config": 2, "agent.runtime": 2,
    "agent.buffer": 3,
    "agent.acquire": 4, "agent.writeback": 4, "agent.publish": 4,
    "agent.app": 5,
    "agent.cli": 6,
    "agent.__main__": 7,
}


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project's modules that `name` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from pkg import mod` imports the module pkg.mod, `from mod import x` mod itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def stage(module: str) -> str | None:
    return next((s for s in STAGES if module == s or module.startswith(s + ".")), None)


def test_there_is_no_import_circle() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert circles == [], "\n".join(" <-> ".join(c) for c in circles)


def test_imports_follow_the_one_way_rules() -> None:
    wrong = []
    for module, targets in sorted(graph().items()):
        top = module.split(".")[0]
        for target in sorted(targets):
            target_top = target.split(".")[0]
            if top in ("drivers", "simulators") and target_top != top:
                wrong.append(f"{module} -> {target}: {top}/ imports nothing of the others")
            if top != "agent" or target_top != "agent":
                if top == "agent" and target_top == "simulators" and stage(module) != "agent.cli":
                    wrong.append(f"{module} -> {target}: only the CLI (demo, sim) runs simulators")
                continue
            here, there = stage(module), stage(target)
            if here is None or there is None:
                if module not in ("agent", "agent.__main__") and target != "agent":
                    wrong.append(f"{module} -> {target}: a module outside every stage")
                continue
            if here != there and STAGES[there] >= STAGES[here]:
                wrong.append(f"{module} -> {target}: {here} may not import {there}")
    assert wrong == []


@pytest.mark.parametrize("stage_name", sorted(STAGES))
def test_every_stage_exists(stage_name: str) -> None:
    path = REPO / Path(*stage_name.split("."))
    assert path.is_dir() or path.with_suffix(".py").exists()
