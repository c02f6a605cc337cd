"""The package's layout: every import runs down the floors (or stays on one), and no modules import in a cycle.

The floors, lowest first, are FLOORS below (lakehouse_utils/__init__.py tells the same story): a module may import
from its own floor or a lower one, never from a higher one, and no chain of imports may come back to where it
started.  Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "lakehouse_utils"
# lowest first; "" is the package's top level, the modules used from several floors
FLOORS = ["", "sources", "kafka", "layers", "engine", "views", "ops", "bench"]
TOP = {"__init__", "config", "jars", "procs", "progress"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. lakehouse_utils.kafka.broker
    target: str  # the imported module or package
    path: Path
    line: int


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root`` by dotted name (a package by the name of its folder)."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(root: Path) -> list[Import]:
    """Every import of one module of the package by another, at any depth, relative ones resolved."""
    mods = modules(root)
    out = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from pkg import module` imports the module; `from module import name` the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in dict.fromkeys(targets):
                while target and target not in mods:  # a submodule of a third-party package, or a name
                    target = target.rpartition(".")[0]
                if target and target != name:
                    out.append(Import(name, target, path, node.lineno))
    return out


def floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 and parts[1] in FLOORS else 0


def upward(found: list[Import], root: Path) -> list[str]:
    return [f"{i.path.relative_to(root)}:{i.line}: {i.source} imports {i.target}, which is on a higher floor "
            f"({FLOORS[floor(i.target)]} above {FLOORS[floor(i.source)] or 'the top level'})"
            for i in found if floor(i.target) > floor(i.source)]


def cycles(found: list[Import]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected group of modules (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for i in found:
        graph.setdefault(i.source, set()).add(i.target)
        graph.setdefault(i.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(group, graph) for group in groups]


def _one_cycle(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest way from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                todo.append(w)
    raise AssertionError(f"no cycle through {start}")  # cannot happen in a strongly connected group


# -- the package as it is ----------------------------------------------------------------------------------
def test_every_import_runs_down_the_floors() -> None:
    found = imports(ROOT)
    assert len(found) > 100  # the parser sees the package's imports
    problems = upward(found, ROOT)
    assert not problems, "imports from a higher floor:\n" + "\n".join(problems)


def test_no_import_cycle() -> None:
    found = cycles(imports(ROOT))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_every_folder_is_a_floor_and_says_what_it_is_for() -> None:
    pkg = ROOT / PACKAGE
    folders = {p.parent.name for p in pkg.glob("*/*.py")}
    assert folders == set(FLOORS[1:]), f"folders not on a floor, or floors with no folder: {folders ^ set(FLOORS[1:])}"
    top = {p.stem for p in pkg.glob("*.py")}
    assert top == TOP, f"the top level holds only modules used from several floors; new: {top - TOP}"
    for name in FLOORS[1:]:
        doc = ast.get_docstring(ast.parse((pkg / name / "__init__.py").read_text()))
        assert doc and "Imports" in doc, f"{PACKAGE}/{name}/__init__.py: say what the folder is for and what it imports"
    # the package's docstring names the floors in the same order
    doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text())) or ""
    named = [line.split()[0] for line in doc.splitlines() if line.startswith("    ") and line.split()]
    assert named == ["(top)", *FLOORS[1:]], named


# -- the checks themselves: they catch an upward import and a cycle -----------------------------------------
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    _write(tmp_path, {
        "__init__.py": "from .config import Settings\n",
        "config.py": "",
        "sources/__init__.py": "",
        "sources/trades.py": "from ..config import Settings\n",
        "kafka/__init__.py": "",
        "kafka/producer.py": "from ..sources import trades\n",
        "layers/__init__.py": "",
        "layers/gold.py": "def start():\n    from .gold_writer import Writer\n",
        "layers/gold_writer.py": "from lakehouse_utils.kafka.producer import x\n",
    })
    return tmp_path


def test_a_clean_tree_passes(tree: Path) -> None:
    found = imports(tree)
    assert {(i.source, i.target) for i in found} >= {
        ("lakehouse_utils.sources.trades", "lakehouse_utils.config"),
        ("lakehouse_utils.kafka.producer", "lakehouse_utils.sources.trades"),
        ("lakehouse_utils.layers.gold", "lakehouse_utils.layers.gold_writer"),
        ("lakehouse_utils.layers.gold_writer", "lakehouse_utils.kafka.producer")}
    assert not upward(found, tree) and not cycles(found)


def test_an_upward_import_inside_a_function_is_named(tree: Path) -> None:
    _write(tree, {"sources/trades.py": "from ..config import Settings\n\n\ndef f():\n"
                                       "    from lakehouse_utils.layers import gold\n"})
    assert upward(imports(tree), tree) == [
        "lakehouse_utils/sources/trades.py:5: lakehouse_utils.sources.trades imports lakehouse_utils.layers.gold, "
        "which is on a higher floor (layers above sources)"]


def test_a_cycle_is_named(tree: Path) -> None:
    _write(tree, {"layers/gold_writer.py": "from .gold import start\n"})
    assert cycles(imports(tree)) == [
        ["lakehouse_utils.layers.gold", "lakehouse_utils.layers.gold_writer", "lakehouse_utils.layers.gold"]]
