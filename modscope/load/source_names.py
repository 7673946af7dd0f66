"""What a Python file defines, read from its source with ``ast``: nothing in it is imported or run.

Shell completion of ``file.py:Name`` and the error for a ``.py`` TARGET given without ``:Name`` name a
file's models this way, so code in a model file never runs just because a user pressed TAB or left out
the name. It is a reading of the source, not of the objects: a class counts as a module class when one of
its bases is spelt like one (``nn.Module``, ``torch.nn.Sequential``, a class of the same file that is one).

>>> [d.name for d in defined_names("examples/lenet.py")]
['LeNet']
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass

#: files larger than this are not parsed (a completion must answer at once; no model file is this big)
MAX_SOURCE_BYTES = 2 << 20
_MODULE_BASES = ("Module", "Sequential", "ModuleList", "ModuleDict", "Model", "PreTrainedModel")


@dataclass(frozen=True)
class Defined:
    """One name a file defines at its top level (or a class defines in its body)."""

    name: str
    kind: str  # "class", "function" or "instance" (a top-level NAME = Call(...))
    module_class: bool = False  # a class whose bases read as nn.Module subclasses


def defined_names(path: str | os.PathLike, *, within: str = "", follow: bool = True) -> list[Defined]:
    """Public classes, functions and instances ``path`` defines, in source order; [] when it cannot be read.

    ``within`` names a class (dotted for nested ones): its methods and nested classes instead. With ``follow``,
    what the file imports from its own package (``from .resnet import *``, ``from .x import Net``) counts too,
    one level deep, as a package's ``__init__.py`` exports it.
    """
    tree = _parse(path)
    if tree is None:
        return []
    body = tree.body
    for part in filter(None, within.split(".")):
        cls = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == part), None)
        if cls is None:
            return []
        body = cls.body
    out: list[Defined] = []
    module_classes: set[str] = set()
    for node in body:
        if isinstance(node, ast.ClassDef):
            is_module = any(_reads_as_module(base, module_classes) for base in node.bases)
            if is_module:
                module_classes.add(node.name)
            out.append(Defined(node.name, "class", is_module))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append(Defined(node.name, "function"))
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and not within:
            out += [Defined(t.id, "instance") for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.ImportFrom) and node.level and follow and not within:
            out += _imported(path, node)
    seen: set[str] = set()
    return [d for d in out if not d.name.startswith("_") and not (d.name in seen or seen.add(d.name))]


def _imported(path, node: ast.ImportFrom) -> list[Defined]:
    """The names ``from .module import ...`` brings into ``path`` (``*``: the module's ``__all__`` or its names)."""
    base = os.path.dirname(os.path.abspath(path))
    for _ in range(node.level - 1):
        base = os.path.dirname(base)
    source = module_file(node.module, [base]) if node.module else None
    there = {d.name: d for d in defined_names(source, follow=False)} if source else {}
    if any(alias.name == "*" for alias in node.names):
        exported = _literal_all(source) if source else None
        if exported is None:
            return list(there.values())
        return [there.get(name, Defined(name, "imported")) for name in exported]
    out = []
    for alias in node.names:
        found = there.get(alias.name, Defined(alias.name, "imported"))
        out.append(Defined(alias.asname or alias.name, found.kind, found.module_class))
    return out


def _literal_all(path) -> list[str] | None:
    tree = _parse(path)
    for node in tree.body if tree is not None else ():
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                names = ast.literal_eval(node.value)
            except (ValueError, SyntaxError, TypeError):
                return None
            return [n for n in names if isinstance(n, str)] if isinstance(names, (list, tuple)) else None
    return None


def buildable(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(module classes, factory functions) ``path`` defines: what ``file.py:Name`` could name.

    When no class reads as a module class, every public class is listed (its bases may come from elsewhere).
    """
    names = defined_names(path)
    classes = [d.name for d in names if d.kind == "class" and d.module_class]
    if not classes:
        classes = [d.name for d in names if d.kind == "class"]
    return classes, [d.name for d in names if d.kind == "function"]


def module_file(dotted: str, roots: list[str]) -> str | None:
    """The source file of ``package.module`` under one of ``roots`` (no import: the folders are looked at)."""
    parts = dotted.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    for root in roots:
        base = os.path.join(root or ".", *parts)
        for candidate in (base + ".py", os.path.join(base, "__init__.py")):
            if os.path.isfile(candidate):
                return candidate
    return None


def _parse(path) -> ast.Module | None:
    try:
        if os.path.getsize(path) > MAX_SOURCE_BYTES:
            return None
        with open(path, "rb") as handle:
            return ast.parse(handle.read(), filename=str(path))
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _reads_as_module(base: ast.expr, local: set[str]) -> bool:
    """``nn.Module``, ``torch.nn.Conv2d``, ``Module``, ``MyBlock`` (a module class above) as a base."""
    if isinstance(base, ast.Subscript):  # Generic-style bases: nn.Module subclasses rarely need them
        base = base.value
    if isinstance(base, ast.Name):
        return base.id in local or base.id.endswith(_MODULE_BASES)
    if isinstance(base, ast.Attribute):
        owner = base.value
        if isinstance(owner, ast.Name) and owner.id == "nn":
            return True
        if isinstance(owner, ast.Attribute) and owner.attr == "nn":
            return True
        return base.attr.endswith(_MODULE_BASES)
    return False
