"""The house's import rules hold: no cycles (function-level imports included) and no upward imports."""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from tests.import_rules import check, edges, layer_of

REPO = Path(__file__).resolve().parents[1]


def test_modscope_imports_have_no_cycles_and_only_point_down():
    assert check(REPO) == []


def test_every_package_says_what_it_reads_and_returns():
    for init in sorted((REPO / "modscope").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 80, f"{init.relative_to(REPO)} needs a paragraph saying what the package is"


def test_reports_never_import_renderers():
    reaching = [e for e in edges(REPO) if layer_of(e.source) == "reports" and e.target.startswith("modscope.render")]
    assert reaching == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "modscope" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def test_the_checker_names_a_lazy_cycle_and_an_upward_import(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": '"""x"""\n',
        "reports/__init__.py": '"""x"""\n',
        "reports/a.py": "def view():\n    from modscope.render.b import show\n    return show\n",
        "render/__init__.py": '"""x"""\n',
        "render/b.py": "from modscope.reports.a import view\n",
    })
    problems = check(root)
    assert any("modscope/reports/a.py:2: modscope.reports.a (reports) imports modscope.render.b (render)" in p
               for p in problems), problems
    assert any(p.startswith("import cycle among modscope.render.b, modscope.reports.a") for p in problems), problems


def test_the_checker_sees_relative_and_dynamic_imports_and_unplaced_modules(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": '"""x"""\n',
        "core/__init__.py": '"""x"""\n',
        "core/low.py": "from ..collect import high\n",
        "collect/__init__.py": '"""x"""\n',
        "collect/high.py": "import importlib\nimportlib.import_module('modscope.api.door')\n",
        "api/__init__.py": '"""x"""\n',
        "api/door.py": "",
        "stray.py": "",
    })
    problems = check(root)
    assert any("modscope/core/low.py:1" in p and "upward" in p for p in problems), problems
    assert any("modscope/collect/high.py:2" in p and "modscope.api.door (api)" in p for p in problems), problems
    assert any("modscope.stray belongs to no layer" in p for p in problems), problems


def _documented_tree() -> set[str]:
    """Paths named in docs/architecture.md's tree block: 'errors.py', 'collect', 'collect/static', ..."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = text.split("```\nmodscope/\n", 1)[1].split("```", 1)[0]
    names, folders = set(), {}
    for line in block.splitlines():
        entry = line.split()[0] if line.strip() else ""
        indent = len(line) - len(line.lstrip())
        if not entry.endswith(("/", ".py")):
            continue  # a continuation line of a description
        path = folders.get(indent - 2, "") + entry
        names.add(path.rstrip("/"))
        if entry.endswith("/"):
            folders[indent] = path
    return names


def test_architecture_doc_tree_matches_the_package():
    package = REPO / "modscope"
    actual = {p.name for p in package.iterdir() if p.suffix == ".py"}
    actual |= {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    actual |= {f"collect/{p.name}" for p in (package / "collect").iterdir() if (p / "__init__.py").exists()}
    documented = {name for name in _documented_tree() if name.count("/") <= 1}
    assert documented == actual, f"docs/architecture.md lists {sorted(documented - actual)}, misses {sorted(actual - documented)}"
