"""What to suggest when a TARGET names nothing that exists: the closest path, the closest importable module,
and, for a Python file given without ``:Name``, the names it defines (read by ``ast``, never imported).

>>> closest_path("exmples/lenet.py")
'examples/lenet.py'
"""
from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path


def name_the_model(path: Path) -> str:
    """The error for a Python file given without ``:Name``: what it defines (read by ``ast``, never run)."""
    from modscope.load.source_names import buildable

    classes, factories = buildable(path)
    if not classes and not factories:
        return f"{path} is Python source that defines no class or function: give path/to/file.py:Name"
    listed = "; ".join(
        f"{what}: {_first_few(names)}" for what, names in (("classes", classes), ("factories", factories)) if names
    )
    return f"{path} is Python source: name the model in it, e.g. {path}:{(classes or factories)[0]} ({listed})"


def _first_few(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def closest_path(text: str) -> str | None:
    """The existing path closest to a misspelt one, part by part (``exmples/lenet.py`` -> ``examples/lenet.py``)."""
    path = Path(text)
    if path.exists() or not text:
        return None
    parts = path.parts
    found = Path(parts[0]) if path.is_absolute() else Path(".")
    start = 1 if path.is_absolute() else 0
    for part in parts[start:]:
        if (found / part).exists():
            found = found / part
            continue
        try:
            names = [n for n in os.listdir(found) if not n.startswith(".") or part.startswith(".")]
        except OSError:
            return None
        close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
        if not close:
            return None
        found = found / close[0]
    shown = str(found)
    return shown if shown != text else None


def close_module(name: str) -> str | None:
    """The importable module closest to a misspelt ``name``, found by listing folders (nothing imported)."""
    import pkgutil

    parent, _, leaf = name.rpartition(".")
    package = sys.modules.get(parent) if parent else None
    if parent and package is None:
        return None
    where = getattr(package, "__path__", None) if package is not None else None
    if parent and where is None:
        return None
    try:
        names = {m.name for m in pkgutil.iter_modules(where)}
    except (OSError, ValueError):
        return None
    close = difflib.get_close_matches(leaf, sorted(names), n=1, cutoff=0.75)
    return (f"{parent}.{close[0]}" if parent else close[0]) if close else None
