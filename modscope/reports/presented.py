"""The one seam between reports and their presentation: a registry that renderers fill and reports consult.

Reports never import a renderer. ``modscope.render.views`` registers one function per (report type, kind)
here when it is imported, and the front doors (the ``modscope`` namespace, the CLI) import it first, so the
imports run one way: render -> report. Kinds: ``rich`` (a rich renderable), ``html`` (a self-contained HTML
fragment for Jupyter), ``svg``, ``dot`` and ``file`` (architecture graphs).
"""
from __future__ import annotations

from typing import Any, Callable

_VIEWS: dict[tuple[type, str], Callable[..., Any]] = {}


def register(report_type: type, kind: str, view: Callable[..., Any]) -> None:
    """Make ``view(report, *args)`` the ``kind`` presentation of ``report_type`` (and its subclasses)."""
    _VIEWS[(report_type, kind)] = view


def present(report: Any, kind: str, *args: Any) -> Any:
    """``report`` presented as ``kind`` by the registered view; ``None`` when it has no such presentation."""
    for cls in type(report).__mro__:
        view = _VIEWS.get((cls, kind))
        if view is not None:
            return view(report, *args)
    if not _VIEWS:
        raise RuntimeError(
            f"no renderers are registered to show a {type(report).__name__}: import modscope.render.views first "
            "(the modscope namespace and the CLI do this on first use)"
        )
    return None


class Presented:
    """Mixin for reports: rich's and Jupyter's display protocols, answered through the registry."""

    __slots__ = ()

    def __rich__(self):
        view = present(self, "rich")
        if view is None:
            raise TypeError(f"{type(self).__name__} has no terminal view")
        return view

    def _repr_html_(self) -> str | None:
        return present(self, "html")
