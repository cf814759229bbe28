"""The engine's import arrows, read from the source with ``ast`` (docs/architecture.md, "What may import what").

A two-way tie between two of the engine's folders (the top-level engine modules count as one room) means
neither can be understood, tested or moved without the other; an import hidden inside a function to get
round a circle is the same tie, only invisible until the function runs.  Every import counts: at module top,
inside functions, under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINE = REPO / "engine"
NS = "wanlora.engine"
TOP = "engine (top-level modules)"


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported engine module or package, dotted
    where: str  # engine/x/y.py:LINE
    in_function: bool


def module_name(path: Path, root: Path = ENGINE, ns: str = NS) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([ns, *parts])


def _existing(dotted: str, root: Path, ns: str) -> str | None:
    """The longest prefix of ``dotted`` that is a module or package under ``root`` (None outside ``ns``)."""
    if dotted != ns and not dotted.startswith(ns + "."):
        return None
    parts = dotted[len(ns):].lstrip(".").split(".") if dotted != ns else []
    while parts:
        base = root.joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return ".".join([ns, *parts])
        parts = parts[:-1]
    return ns


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it sits inside a function (class bodies run at import time)."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, in_function))
            walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    walk(tree, False)
    return found


def engine_edges(root: Path = ENGINE, ns: str = NS) -> list[Edge]:
    """Every import of an engine module by an engine module (``import``, ``from … import``, relative ones)."""
    edges: list[Edge] = []
    for path in sorted(root.rglob("*.py")):
        source = module_name(path, root, ns)
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        where = f"{path.relative_to(root.parent)}"
        for node, in_function in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                # `from pkg import mod` imports pkg and pkg.mod; `from mod import name` imports mod
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in {t for n in names if (t := _existing(n, root, ns)) is not None}:
                if target != source:
                    edges.append(Edge(source, target, f"{where}:{node.lineno}", in_function))
    return edges


def room(module: str, root: Path = ENGINE, ns: str = NS) -> str:
    """``engine/<folder>`` for a module in a folder; the top-level modules (and the package itself) are one room."""
    first = module[len(ns):].lstrip(".").split(".")[0]
    return f"engine/{first}" if first and (root / first / "__init__.py").is_file() else TOP


def two_way_ties(edges: list[Edge], root: Path = ENGINE, ns: str = NS) -> list[str]:
    by_pair: dict[tuple[str, str], list[Edge]] = defaultdict(list)
    for e in edges:
        a, b = room(e.source, root, ns), room(e.target, root, ns)
        if a != b:
            by_pair[(a, b)].append(e)
    ties = []
    for (a, b), forward in sorted(by_pair.items()):
        if a < b and (b, a) in by_pair:
            lines = [f"  {e.where} imports {e.target}" for e in forward + by_pair[(b, a)]]
            ties.append(f"{a} <-> {b}:\n" + "\n".join(lines))
    return ties


def hidden_circles(edges: list[Edge]) -> list[str]:
    """Imports inside a function whose target imports the importing module back (directly or through others)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        graph[e.source].add(e.target)

    def path_back(start: str, goal: str) -> list[str] | None:
        came_from: dict[str, str | None] = {start: None}
        todo = [start]
        while todo:
            m = todo.pop(0)
            if m == goal:
                chain = [m]
                while (prev := came_from[chain[-1]]) is not None:
                    chain.append(prev)
                return chain[::-1]
            for n in sorted(graph[m]):
                if n not in came_from:
                    came_from[n] = m
                    todo.append(n)
        return None

    out = []
    for e in edges:
        if e.in_function and (chain := path_back(e.target, e.source)):
            out.append(f"{e.where}: {e.source} imports {e.target} inside a function, and "
                       f"{' -> '.join(chain)} closes the circle")
    return out


def test_no_two_way_tie_between_the_engines_folders() -> None:
    edges = engine_edges()
    assert len(edges) > 100, "the walk found almost no engine imports: it no longer reads the source"
    ties = two_way_ties(edges)
    assert not ties, ("engine folders import each other (move the shared piece to the folder below both; "
                      "docs/architecture.md, 'What may import what'):\n" + "\n".join(ties))


def test_no_import_inside_a_function_closes_a_circle() -> None:
    circles = hidden_circles(engine_edges())
    assert not circles, ("a function-level import hides an import circle (move the shared piece into a module "
                         "both import at the top):\n" + "\n".join(circles))


def test_the_walk_sees_both_kinds_of_fault(tmp_path: Path) -> None:
    """The checks above on a made-up engine: a two-way tie and a circle hidden in a function are found, with
    the file and line; relative imports and ``TYPE_CHECKING`` imports count."""
    pkg = tmp_path / "engine"
    for folder in ("low", "high"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from wanlora.engine.high import b\n")
    (pkg / "high" / "b.py").write_text("from ..low import a\n\n\ndef f():\n    from . import c\n")
    (pkg / "high" / "c.py").write_text("import wanlora.engine.high.b\n")
    (pkg / "tool.py").write_text("from wanlora.engine.low.a import x\n")
    edges = engine_edges(pkg)
    ties = two_way_ties(edges, pkg)
    assert len(ties) == 1 and ties[0].startswith("engine/high <-> engine/low:")
    assert "engine/low/a.py:3 imports wanlora.engine.high.b" in ties[0]
    assert "engine/high/b.py:1 imports wanlora.engine.low.a" in ties[0]
    assert hidden_circles(edges) == ["engine/high/b.py:5: wanlora.engine.high.b imports wanlora.engine.high.c inside a "
                                     "function, and wanlora.engine.high.c -> wanlora.engine.high.b closes the circle"]
    assert room("wanlora.engine.tool", pkg) == room("wanlora.engine", pkg) == TOP


def test_the_daemon_and_the_tui_sit_above_the_engine() -> None:
    """The engine never imports the daemon or the TUI; the daemon reads the engine only through engine.config
    (its intake checker process also through engine.checks): both are torch-free."""
    for path in sorted(ENGINE.rglob("*.py")):
        for node, _ in _imports(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            bad = [n for n in names if n.startswith(("wanlora.daemon", "wanlora.tui"))]
            assert not bad, f"{path.relative_to(REPO)}:{node.lineno} imports {bad}"
    for path in sorted((REPO / "daemon").rglob("*.py")):
        allowed = ("wanlora.engine.config",) + (("wanlora.engine.checks",) if path.name == "intake_worker.py" else ())
        for node, _ in _imports(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                if n.startswith("wanlora.engine"):
                    assert n.startswith(allowed), f"{path.relative_to(REPO)}:{node.lineno} imports {n}"
