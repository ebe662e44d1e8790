"""The package's layering, read from its source: data flows one way and the folders show it.

nn/ (the maths people read) imports nothing above it; probes/ (statistics and records) imports
neither the trainer, the config nor nn/; no module imports one that imports it back, at module level
or inside a function. These are drift tests: they walk the code, so a new module is covered the day
it is added."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nnprobe"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node that runs: all of them except what sits under `if TYPE_CHECKING:` (annotations only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in ast.walk(child))
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(path: Path) -> set[str]:
    """Every nnprobe module `path` imports when it runs, anywhere in it (a function-level import counts too)."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("nnprobe"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("nnprobe"):
            # `from nnprobe.probes import kernel` imports the module nnprobe.probes.kernel (its package
            # is its parent either way); `from nnprobe.probes.records import X` imports records
            folder = PACKAGE.parent / node.module.replace(".", "/")
            submodules = {f"{node.module}.{a.name}" for a in node.names if (folder / f"{a.name}.py").exists()}
            found.update(submodules if len(submodules) == len(node.names) else submodules | {node.module})
    return found


GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_the_graph_covers_the_package():
    assert {"nnprobe.nn.model", "nnprobe.probes.records", "nnprobe.train.loop", "nnprobe.cli"} <= set(GRAPH)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("nnprobe.nn.")))
def test_nn_imports_nothing_above_it(module):
    above = {m for m in GRAPH[module] if m.startswith("nnprobe.") and not m.startswith("nnprobe.nn")
             and m != "nnprobe.errors"}
    assert not above, f"{module} imports {sorted(above)}: nn/ may use only nn/ and nnprobe.errors"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("nnprobe.probes.")))
def test_probes_need_neither_the_trainer_nor_the_config_nor_nn(module):
    bad = {m for m in GRAPH[module] if m.startswith(("nnprobe.train", "nnprobe.config", "nnprobe.nn",
                                                       "nnprobe.diagnose", "nnprobe.reports", "nnprobe.app"))}
    assert not bad, f"{module} imports {sorted(bad)}"


def _resolve(name: str) -> str | None:
    """The module a dotted name refers to (a package's __init__ counts as the package)."""
    while name and name not in GRAPH:
        name = name.rpartition(".")[0]
    return name or None


def test_no_import_cycle():
    edges = {m: {r for r in map(_resolve, deps) if r and r != m and r != "nnprobe"} for m, deps in GRAPH.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n):] + [n] if n in path else [m, n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
