"""Layout helper: runs of structurally identical siblings (``layers.0`` .. ``layers.31``) shown as one row."""
from __future__ import annotations

from dataclasses import dataclass

from modscope.reports import ModuleInfo


@dataclass(frozen=True)
class Row:
    """A module, or a run of ``count`` identical siblings represented by ``module`` (the first of them)."""

    module: ModuleInfo
    count: int = 1
    last: str = ""  # name of the last module of the run

    @property
    def label(self) -> str:
        if self.count == 1:
            return self.module.name or "(root)"
        stem, _, first = self.module.name.rpartition(".")
        last = self.last.rpartition(".")[2]
        return f"{stem}.{first}-{last}" if stem else f"{first}-{last}"


def group_children(children: list[ModuleInfo], collapse: bool = True, min_run: int = 2) -> list[Row]:
    """Consecutive siblings with the same signature become one Row (only when ``collapse``)."""
    rows: list[Row] = []
    i = 0
    while i < len(children):
        j = i + 1
        if collapse:
            while j < len(children) and children[j].signature == children[i].signature:
                j += 1
        run = j - i
        if run >= min_run:
            rows.append(Row(children[i], run, children[j - 1].name))
        else:
            rows.extend(Row(m) for m in children[i:j])
        i = j
    return rows
