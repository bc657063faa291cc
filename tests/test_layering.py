"""Imports between the package's modules run one way: reader → hub → wire → app → server → manager → faces.

Every module of ``lightning_stream/`` sits in one layer of ``LAYERS``; a module may import
(at the top, inside a function or under ``TYPE_CHECKING``: all count) only modules of its own
layer or a lower one, and no set of modules may import each other in a circle. A new module
must be placed in a layer here, which is the point: the reviewer sees where it goes.
Read with ``ast``, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_stream"
MAX_LINES = 420  # "~400"

# Lowest first. A module may import from its own layer and the layers before it.
LAYERS: list[tuple[str, frozenset[str]]] = [
    (
        "base",
        frozenset(
            {
                "_version",
                "errors",
                "config",
                "scalars",
                "threads",
                "logs",
                "looplag",
                "globs",
                "supervisor",
                "health",
            }
        ),
    ),
    (
        "reader",
        frozenset({"tfrecord", "filesystem", "_inotify", "_speedups", "objectstore", "reader", "watcher", "firstread"}),
    ),
    ("hub", frozenset({"series", "hub"})),
    ("wire", frozenset({"wire", "encoding"})),
    ("send", frozenset({"direct"})),
    (
        "app",
        frozenset(
            {
                "params",
                "security",
                "connections",
                "metrics",
                "sse",
                "websocket",
                "seriesapi",
                "openapi",
                "indexpage",
                "staticfiles",
                "app",
            }
        ),
    ),
    ("server", frozenset({"registry", "ports", "processhooks", "logdirs", "threaded", "server", "child", "isolated"})),
    ("manager", frozenset({"manager"})),
    ("faces", frozenset({"callback", "follow", "client", "cli", "notebook", "__init__", "__main__"})),
]

# Edges that still run the wrong way, to be removed one by one (empty when the layout is done).
KNOWN_BACK_EDGES: frozenset[tuple[str, str]] = frozenset()


def layer_of() -> dict[str, int]:
    return {module: rank for rank, (_, modules) in enumerate(LAYERS) for module in modules}


def package_imports(source: str, *, is_package_init: bool = False) -> set[str]:
    """The modules of ``lightning_stream`` that ``source`` imports (any form, anywhere in it)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "lightning_stream" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module is not None:
                parts = node.module.split(".")
                if parts[0] != "lightning_stream":
                    continue
            elif node.level == 1:
                parts = ["lightning_stream", *(node.module.split(".") if node.module else [])]
            else:
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from lightning_stream import x, y: each may be a module
                found.update(alias.name for alias in node.names)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {p.stem for p in root.glob("*.py")} | {p.stem for p in root.glob("*.pyi")}
    graph: dict[str, set[str]] = {}
    for path in sorted(root.glob("*.py")):
        graph[path.stem] = (package_imports(path.read_text()) & modules) - {path.stem}
    return graph


def back_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Imports from a lower layer to a higher one: (importer, imported)."""
    rank = layer_of()
    return {(a, b) for a, deps in graph.items() for b in deps if rank[b] > rank[a]}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(set(import_graph()) - set(layer_of()))
    assert not unplaced, f"modules without a layer: {unplaced}; add each to LAYERS in {__file__}"


def test_imports_run_one_way() -> None:
    graph = import_graph()
    wrong = back_edges(graph) - KNOWN_BACK_EDGES
    assert not wrong, "imports from a lower layer to a higher one (importer -> imported): " + ", ".join(
        f"{a} -> {b}" for a, b in sorted(wrong)
    )
    mended = KNOWN_BACK_EDGES - back_edges(graph)
    assert not mended, f"these back-edges are gone; delete them from KNOWN_BACK_EDGES: {sorted(mended)}"


def test_no_import_circle() -> None:
    graph = import_graph()
    graph = {a: {b for b in deps if (a, b) not in KNOWN_BACK_EDGES} for a, deps in graph.items()}
    assert cycles(graph) == []


def test_a_planted_back_edge_fails(tmp_path: Path) -> None:
    """The checks above catch a hub that imports the server, and the circle it makes."""
    for path in PACKAGE.glob("*.py"):
        (tmp_path / path.name).write_text(path.read_text())
    hub = tmp_path / "hub.py"
    hub.write_text(hub.read_text() + "\nfrom lightning_stream.server import StreamServer\n")
    graph = import_graph(tmp_path)
    assert ("hub", "server") in back_edges(graph)
    assert any({"hub", "server"} <= set(c) for c in cycles(graph))


def test_relative_and_lazy_imports_count() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import hub\n"
        "from .wire import x\n"
        "if TYPE_CHECKING:\n    from lightning_stream.manager import M\n"
        "def f():\n    import lightning_stream.server\n"
    )
    assert package_imports(source) == {"hub", "wire", "manager", "server"}


def test_a_long_module_says_why() -> None:
    """Small modules, one concept each; a longer one says in its docstring why it stays whole."""
    unexplained = []
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text()
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > MAX_LINES and "Why one module of this length" not in docstring:
            unexplained.append(path.name)
    assert not unexplained, f"over {MAX_LINES} lines without saying why (module docstring): {unexplained}"
