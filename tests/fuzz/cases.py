"""A fuzz case: one checkpoint path, what kind of file it is (valid, bad or either) and what that allows."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

VALID, BAD, EITHER = "valid", "bad", "either"


@dataclass
class Case:
    """One file or folder to feed to every reading command.

    ``kind``: valid (must be read: exit 0/1), bad (must be refused: exit 2, one line) or either (a seeded
    mutation that may or may not still be a valid file). ``same``: its tensors equal the family's reference
    (a diff against it must say identical). ``fits``: it loads into the fuzz model. ``refusable``: a valid
    file modscope may refuse cleanly instead (exit 2) but never misread. ``marker``: the file its payload
    would create. ``expect``: allowed exit codes per command, overriding the rules above.
    """

    name: str
    path: str
    kind: str
    reference: str
    same: bool = False
    fits: bool = False
    refusable: bool = False
    marker: str | None = None
    expect: dict[str, set[int]] = field(default_factory=dict)
    bounded: bool = True  # small file: peak memory must stay bounded


@dataclass
class Builder:
    """Where cases are written, and the list they are added to."""

    root: Path
    full: bool
    cases: list[Case] = field(default_factory=list)

    def folder(self, family: str) -> Path:
        path = self.root / "cases" / family
        path.mkdir(parents=True, exist_ok=True)
        return path

    def marker(self, name: str) -> str:
        """The file a payload of case ``name`` creates (inside the fuzz root, nowhere else)."""
        folder = self.root / "markers"
        folder.mkdir(exist_ok=True)
        return str(folder / re.sub(r"[^A-Za-z0-9_.-]", "_", name))

    @property
    def outside(self) -> Path:
        """Files outside every checkpoint folder, which hostile indexes and metadata point at."""
        path = self.root / "outside"
        path.mkdir(exist_ok=True)
        return path

    def add(self, name: str, path, kind: str, reference, **options) -> Case:
        case = Case(name=name, path=str(path), kind=kind, reference=str(reference), **options)
        self.cases.append(case)
        return case

    def valid(self, name: str, path, reference, **options) -> Case:
        options.setdefault("same", True)
        options.setdefault("fits", True)
        return self.add(name, path, VALID, reference, **options)

    def bad(self, name: str, path, reference, **options) -> Case:
        return self.add(name, path, BAD, reference, **options)

    def either(self, name: str, path, reference, **options) -> Case:
        return self.add(name, path, EITHER, reference, **options)


def build_cases(root: Path, full: bool = False) -> list[Case]:
    """Write every case under ``root`` (the fuzz model, the files, markers' folder) and return them."""
    from tests.fuzz import cases_other, cases_torch
    from tests.fuzz.torch_files import MODEL_SOURCE

    (root / "fuzz_model.py").write_text(MODEL_SOURCE)
    builder = Builder(root=root, full=full)
    cases_torch.add_all(builder)
    cases_other.add_all(builder)
    names = [c.name for c in builder.cases]
    assert len(names) == len(set(names)), "fuzz case names must be unique"
    return builder.cases


def model_target(root: Path) -> str:
    return f"{root / 'fuzz_model.py'}:Net"
