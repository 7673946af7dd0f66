"""Architecture snapshots: a golden file per test that records a model's structure, and a structural diff.

A snapshot is JSON with one entry per line (diffs well in git): the model type, totals, every module
(type and ``extra_repr``, in pre-order), every parameter/buffer (kind, shape, dtype), and with inputs the
shapes every module was called with and returned. Nothing machine-specific goes in: no devices, addresses,
timings or values.

The pytest fixture ``modscope_snapshot`` (``modscope.plugin``) is a thin door over ``SnapshotFixture``.
torch is imported only when a snapshot is built, so loading the plugin costs nothing.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "modscope.snapshot/1"
_ADDRESS = re.compile(r"\s*at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")
_UNSAFE = re.compile(r"[^\w.\[\]=,+-]")
MAX_DIFF_LINES = 40


def build_snapshot(model, inputs: Any = None) -> dict[str, Any]:
    """The snapshot of ``model`` as plain data; with ``inputs``, also what every module was called with and
    returned in one forward pass (``modscope.summary(model, inputs=...)``, eval mode)."""
    from modscope.api.static import summary

    report = summary(model, inputs=inputs, flops=False, memory=False, check_values=False)
    totals = report.totals
    modules: dict[str, str] = {}
    for info in report.modules:
        modules[info.name] = f"{info.type}({_ADDRESS.sub('', info.extra)})"
        modules.update({alias: f"= {info.name or '(root)'}" for alias in info.aliases})
    tensors: dict[str, str] = {}
    for info in (*report.parameters, *report.buffers):
        tensors[info.name] = _tensor_line(info)
        tensors.update({alias: f"= {info.name}" for alias in info.shared_with})
    snap: dict[str, Any] = {
        "schema": SCHEMA,
        "model": report.model.type,
        "totals": {
            "params": totals.params,
            "trainable": totals.trainable_params,
            "buffers": totals.buffers,
            "modules": totals.modules,
        },
        "modules": modules,
        "tensors": tensors,
    }
    if report.forward is not None:
        snap["forward"] = {m.name: _call_line(m) for m in report.forward.modules if m.first is not None}
    return snap


def render(snapshot: dict[str, Any]) -> str:
    """JSON text with one entry per line inside each section, so a changed module is a one-line git diff."""
    lines = ["{"]
    items = list(snapshot.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(value, dict) and value:
            lines.append(f"  {json.dumps(key)}: {{")
            entries = list(value.items())
            for j, (k, v) in enumerate(entries):
                sep = "," if j < len(entries) - 1 else ""
                lines.append(f"    {json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}{sep}")
            lines.append("  }" + comma)
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    return "\n".join(lines + ["}"]) + "\n"


def diff_snapshots(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Readable structural differences, section by section, as in a unified diff: ``-`` the snapshot's entry,
    ``+`` the model's (a changed entry shows both)."""
    out: list[str] = []
    for section in dict.fromkeys([*old, *new]):
        a, b = old.get(section), new.get(section)
        if a == b:
            continue
        if not (isinstance(a, dict) and isinstance(b, dict)):
            out.append(f"{section}: {_show(a)} -> {_show(b)}")
            continue
        lines: list[str] = []
        counts = {"added": 0, "removed": 0, "changed": 0}
        for key in [*a, *(k for k in b if k not in a)]:
            label = key or "(root)"
            if key in a and key in b and a[key] == b[key]:
                continue
            if key in a:
                lines.append(f"  - {label}: {_show(a[key])}")
            if key in b:
                lines.append(f"  + {label}: {_show(b[key])}")
            counts["changed" if key in a and key in b else "removed" if key in a else "added"] += 1
        summary = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        out.append(f"{section} ({summary}):")
        out.extend(lines)
    return out


@dataclass
class SnapshotSession:
    """What one pytest run did with snapshots (kept in ``config.stash``)."""

    update: bool = False
    written: list[Path] = field(default_factory=list)  # created because missing
    rewritten: list[Path] = field(default_factory=list)  # changed under --modscope-update

    def summary_lines(self, root: Path) -> list[str]:
        out = []
        for what, paths in (("wrote", self.written), ("updated", self.rewritten)):
            if paths:
                out.append(f"modscope: {what} {len(paths)} snapshot(s): " + ", ".join(_relative(p, root) for p in paths))
        return out


class SnapshotFixture:
    """Golden architecture snapshots for one test, stored under ``<test dir>/__snapshots__/<test file>/``.

    >>> def test_architecture(modscope_snapshot):
    ...     modscope_snapshot.assert_match(Net(), inputs=torch.randn(1, 3, 32, 32))
    """

    def __init__(self, directory: Path, test_name: str, session: SnapshotSession, root: Path):
        self.directory = directory
        self.test_name = test_name
        self.session = session
        self.root = root
        self._calls = 0

    def path_for(self, name: str) -> Path:
        return self.directory / f"{_UNSAFE.sub('_', name)}.json"

    def assert_match(self, model, inputs: Any = None, name: str | None = None) -> None:
        """Compare ``model``'s architecture with the stored snapshot (written when missing, rewritten with
        ``--modscope-update``). Several calls in one test get ``<test>``, ``<test>.2``, ... unless named."""
        __tracebackhide__ = True
        self._calls += 1
        if name is None:
            name = self.test_name if self._calls == 1 else f"{self.test_name}.{self._calls}"
        path = self.path_for(name)
        new = build_snapshot(model, inputs)
        if not path.exists() or self.session.update:
            self._write(path, new)
            return
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AssertionError(
                f"snapshot {_relative(path, self.root)} is unreadable ({exc}); rewrite it with --modscope-update"
            ) from None
        if old == new:
            return
        from modscope.testing._compare import fail  # torch is loaded by now

        fail(
            f"architecture of {new.get('model')} differs from snapshot {_relative(path, self.root)}",
            ["(if the change is intended, rerun with --modscope-update and commit the snapshot)"]
            + diff_snapshots(old, new),
            limit=MAX_DIFF_LINES,
        )

    def _write(self, path: Path, snapshot: dict[str, Any]) -> None:
        text = render(snapshot)
        existed = path.exists()
        if existed and path.read_text(encoding="utf-8") == text:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        (self.session.rewritten if existed else self.session.written).append(path)


def snapshot_directory(test_file: Path) -> Path:
    """``tests/test_models.py`` -> ``tests/__snapshots__/test_models``."""
    return test_file.parent / "__snapshots__" / test_file.stem


def snapshot_name(nodeid: str) -> str:
    """``tests/test_x.py::TestA::test_b[p]`` -> ``TestA.test_b[p]``."""
    return ".".join(nodeid.split("::")[1:]) or nodeid


def _tensor_line(info) -> str:
    shape = "uninitialized" if info.shape is None else str(tuple(info.shape))
    line = f"{info.kind.value} {shape} {info.dtype}"
    if info.kind.value == "parameter" and not info.requires_grad:
        line += " frozen"
    if info.persistent is False:
        line += " non-persistent"
    return line


def _call_line(module) -> str:
    """'2x3x32x32 -> (2x10, 2x4)' for a module's first call; '[3 calls]' when it ran more than once."""
    from modscope.render.structure_text import call_str, structure_str

    first = module.first
    line = f"{call_str(first.args, first.kwargs)} -> {structure_str(first.output)}"
    if module.calls > 1:
        line += f"  [{module.calls} calls]"
    return _ADDRESS.sub("", line)


def _show(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return value if isinstance(value, str) else json.dumps(value)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
