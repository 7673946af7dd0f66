"""Fill the page template: styles, script, inline SVG and the JSON documents, all in one HTML file."""
from __future__ import annotations

import re
from html import escape
from importlib import resources
from pathlib import Path

from modscope.errors import RenderError
from modscope.render.html_report.data import page_data, script_json
from modscope.render.html_report.svg import graph_svg
from modscope.reports.page import ModelPage


_MARKER = re.compile(r"<!--@([A-Z]+)@-->")


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def page_html(page: ModelPage) -> str:
    """The report as one HTML document (no external resource: it opens offline, from a file:// URL)."""
    svg, note = "", page.graph_note
    nodes: list[int] = []
    clusters: list[int] = []
    if page.graph is not None:
        try:
            svg = graph_svg(page.graph)
        except RenderError as exc:
            note = f"not drawn: {exc}"
        else:
            index = {m.name: i for i, m in enumerate(page.summary.modules)} if page.summary else {}
            nodes = [index.get(n.module, -1) if n.module else -1 for n in page.graph.nodes]
            clusters = [index.get(c.id, -1) for c in page.graph.clusters]
    data = page_data(page, nodes, clusters)
    if note:
        data.setdefault("graph", {})["note"] = note
    documents = [("modscope-page", data)] + [
        (f"modscope-{name}", document) for name, document in page.documents().items()
    ]
    scripts = "\n".join(
        f'<script type="application/json" id="{name}">{script_json(document)}</script>' for name, document in documents
    )
    parts = {
        "TITLE": escape(page.title),
        "STYLE": _asset("report.css"),
        "SVG": svg,
        "DATA": scripts,
        "SCRIPT": _asset("report.js"),
    }
    pieces = _MARKER.split(_asset("template.html"))  # text, key, text, key, ...: values are never searched
    pieces[1::2] = [parts[key] for key in pieces[1::2]]
    return "".join(pieces)


def write_page(page: ModelPage, path: str | Path) -> Path:
    """Write ``page_html(page)`` to ``path`` atomically (render/output.py)."""
    from modscope.render.output import write_output

    return write_output(path, page_html(page).encode("utf-8"), "report file")
