"""Reports show themselves through one seam: the registry in report/presented.py, filled by render/views.py."""
from __future__ import annotations

import io
import subprocess
import sys
from html.parser import HTMLParser

import torch
from rich.console import Console

import modscope
from examples.catalog import EXAMPLES
from modscope.render.views import TERMINAL_VIEWS
from modscope.reports.presented import Presented, present

REPO_ROOT = str(__import__("pathlib").Path(__file__).resolve().parents[1])


def _text(renderable) -> str:
    console = Console(width=100, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts, self.tags = [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)

    def handle_data(self, data):
        self.parts.append(data)


def _lenet():
    return next(e for e in EXAMPLES if e.name == "lenet").build()


def test_every_report_with_a_terminal_view_is_presented_through_the_registry():
    for report_type, view in TERMINAL_VIEWS.items():
        assert issubclass(report_type, Presented), report_type
        assert "__rich__" not in vars(report_type), f"{report_type.__name__} bypasses the seam"


def test_rich_print_of_a_report_is_its_registered_view():
    report = modscope.summary(_lenet())
    assert _text(report) == _text(TERMINAL_VIEWS[type(report)](report))
    assert "LeNet" in _text(report)


def test_notebook_html_carries_the_same_text_as_the_terminal_and_no_script():
    model = _lenet()
    for report in (modscope.summary(model, inputs=torch.randn(1, 1, 28, 28)), modscope.audit(model)):
        html = report._repr_html_()
        parser = _Text()
        parser.feed(html)
        assert parser.tags <= {"pre", "span", "a"}, parser.tags
        shown = "".join(parser.parts)
        terminal = Console(width=120, file=io.StringIO(), color_system=None)
        terminal.print(report)
        assert [line.rstrip() for line in shown.splitlines()] == [
            line.rstrip() for line in terminal.file.getvalue().splitlines()
        ]


def test_a_graph_keeps_svg_and_offers_no_html_so_jupyter_shows_the_drawing():
    graph = modscope.graph(_lenet())
    assert not hasattr(graph, "_repr_html_")
    assert graph.source == present(graph, "dot")
    assert graph.source.startswith('digraph "LeNet"')


def test_importing_reports_imports_no_renderer():
    code = (
        "import sys, modscope.reports, modscope.reports.graph, modscope.reports.checkpoint, modscope.reports.diff\n"
        "print(sorted(m for m in sys.modules if m.startswith('modscope.render')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_a_report_shown_before_any_renderer_is_registered_says_what_to_import():
    code = (
        "from modscope.reports.diff import StateDictDiff\n"
        "from modscope.reports.presented import present\n"
        "try:\n    present(object.__new__(StateDictDiff), 'rich')\n"
        "except RuntimeError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert "import modscope.render.views" in out.stdout
