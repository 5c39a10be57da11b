"""The import graph of src/peft_ir: no cycle, and no library package importing the CLI.

Every import counts, wherever it stands (module level, inside a function, under TYPE_CHECKING): a function-level
import only postpones a cycle to the first call, and a type-only one still ties the two modules together.
`from peft_ir.pkg import X` is an edge to peft_ir.pkg.X when X is a submodule, else to peft_ir.pkg (its __init__);
parent packages are not edges of their own (Python runs them first, but they are never half-initialised by it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "peft_ir"

# Import edges tolerated for now, each with the change that removes it; everything else must be cycle-free.
ALLOWED: set[tuple[str, str]] = set()  # edges a cycle may keep while it is being removed; none today


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _imported(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The peft_ir modules that module `name` imports (ALL its imports: any depth of the tree)."""
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            if target == ROOT or target.startswith(ROOT + "."):
                assert target in modules, f"{name} imports {target}, which is not a module of {ROOT}"
                yield target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: set(_imported(name, path, modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_resolver_sees_every_kind_of_import() -> None:
    graph = _graph()
    assert "peft_ir.tuning.apply" in graph["peft_ir.tuning"]           # a package's __init__ -> its submodules
    assert "peft_ir.tuning.methods" in graph["peft_ir.tuning.config"]  # `import a.b as c`, inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}) == [["a", "b", "c"], ["d"]]


def test_no_import_cycle() -> None:
    graph = _graph()
    for a, b in ALLOWED:
        assert b in graph[a], f"ALLOWED lists {a} -> {b}, which no longer exists: drop it from ALLOWED"
        graph[a].discard(b)
    cycles = _cycles(graph)
    assert not cycles, "import cycles among peft_ir modules:\n" + "\n".join(
        " <-> ".join(c) + "\n    " + "; ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a] & set(c)))
        for c in cycles)


def test_no_library_module_imports_the_cli() -> None:
    cli = f"{ROOT}.cli"
    offenders = sorted(f"{name} -> {target}" for name, targets in _graph().items() if not name.startswith(cli)
                       for target in targets if target == cli or target.startswith(cli + "."))
    assert not offenders, "library modules importing the CLI: " + ", ".join(offenders)
