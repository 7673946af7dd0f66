"""The package's import graph, read from source (``ast``, function-level imports included), and its rules.

Layers, lowest first; a module may import from the layers its own may import (``MAY_IMPORT``), never up:
load/inputs -> collect -> reports <- render <- front doors. ``check(root)`` returns one line per broken
rule, naming the files, so a failing test says what to move.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

LAYERS = {
    "base": ("modscope.errors", "modscope.core", "modscope.schemas"),
    "reports": ("modscope.reports",),
    "load": ("modscope.load", "modscope.checkpoint"),
    "collect": ("modscope.collect",),
    "render": ("modscope.render",),
    "api": ("modscope.api",),
    "doors": ("modscope.cli", "modscope.testing", "modscope.snapshot", "modscope.plugin", "modscope.__main__"),
}
MAY_IMPORT = {
    "base": {"base"},
    "reports": {"base", "reports"},
    "load": {"base", "reports", "load"},
    "collect": {"base", "reports", "load", "collect"},
    "render": {"base", "reports", "render"},
    "api": {"base", "reports", "load", "collect", "render", "api"},
    "doors": set(LAYERS),
}
ROOT_LAYER = "doors"  # modscope/__init__.py resolves the public names


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    file: str
    line: int


def modules(root: Path, package: str = "modscope") -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every .py file under ``root/package``."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def edges(root: Path, package: str = "modscope") -> list[Edge]:
    """Every import of a module of ``package`` by another, wherever it is written in the file."""
    known = modules(root, package)

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found = []
    for source, (path, is_package) in known.items():
        here = source if is_package else source.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, here, known, package):
                target = resolve(target)
                if target is not None and target != source:
                    found.append(Edge(source, target, str(path.relative_to(root)), node.lineno))
    return found


def _targets(node: ast.AST, here: str, known: dict, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if _inside(a.name, package)]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = here.split(".")[: len(here.split(".")) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        if not _inside(base, package):
            return []
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    if isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and _inside(first.value, package):
            return [first.value]
    return []


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _is_dynamic_import(func: ast.AST) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in {"import_module", "__import__"}


def layer_of(module: str, package: str = "modscope") -> str | None:
    if module == package:
        return ROOT_LAYER
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            prefix = package + prefix.removeprefix("modscope")
            if module == prefix or module.startswith(prefix + "."):
                return layer
    return None


def cycles(found: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    graph: dict[str, list[str]] = {}
    for e in found:
        graph.setdefault(e.source, []).append(e.target)
        graph.setdefault(e.target, [])
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        result.append(sorted(component))
    return result


def check(root: Path, package: str = "modscope") -> list[str]:
    """One line per problem: modules in no layer, upward imports, import cycles (with the edges that close them)."""
    found = edges(root, package)
    problems = []
    for name, (path, _) in modules(root, package).items():
        if layer_of(name, package) is None:
            problems.append(f"{path.relative_to(root)}: {name} belongs to no layer (add it to LAYERS)")
    for e in found:
        source, target = layer_of(e.source, package), layer_of(e.target, package)
        if source and target and target not in MAY_IMPORT[source]:
            problems.append(f"{e.file}:{e.line}: {e.source} ({source}) imports {e.target} ({target}), an upward import")
    for component in cycles(found):
        members = set(component)
        closing = [f"{e.file}:{e.line} -> {e.target}" for e in found if e.source in members and e.target in members]
        problems.append(f"import cycle among {', '.join(component)}: {'; '.join(closing)}")
    return problems
