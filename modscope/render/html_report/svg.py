"""The architecture graph as SVG to inline in the page: drawn by Graphviz's real ``dot``, every node and cluster
given the id ``msn-K``/``msc-K`` (its position in the graph's lists) so the script can link it to its module.

The SVG goes into the HTML as markup, so it is checked first: it must parse as XML, hold only the elements and
attributes Graphviz writes (no script, no event handler, no foreign object) and no comments (which repeat
node names); names in labels are escaped by ``render.graph`` and again by Graphviz.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from modscope.errors import RenderError
from modscope.render.graph import render_bytes, to_dot
from modscope.reports.graph import ModelGraph

_SVG = "{http://www.w3.org/2000/svg}"
_ALLOWED = {"svg", "g", "title", "path", "polygon", "polyline", "ellipse", "text", "a", "defs", "line", "rect"}
_HEADER = re.compile(r"^.*?(?=<svg\b)", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)


def node_id(k: int) -> str:
    return f"msn-{k}"


def cluster_id(k: int) -> str:
    return f"msc-{k}"


def graph_svg(graph: ModelGraph, timeout: float | None = None) -> str:
    """Inline SVG markup of ``graph`` (RenderError when dot is missing, fails, or writes what a page must not hold)."""
    ids = {n.id: node_id(k) for k, n in enumerate(graph.nodes)}
    cluster_ids = {c.id: cluster_id(k) for k, c in enumerate(graph.clusters)}
    svg = render_bytes(to_dot(graph, ids, cluster_ids), "svg", timeout).decode("utf-8")
    svg = _COMMENT.sub("", _HEADER.sub("", svg, count=1))
    check(svg)
    return svg


def check(svg: str) -> None:
    """RenderError unless ``svg`` is plain Graphviz output: known elements, no ``on*`` handlers, no scripts."""
    try:
        root = ET.fromstring(svg)
    except ET.ParseError as exc:
        raise RenderError(f"Graphviz wrote SVG that does not parse ({exc})") from None
    for element in root.iter():
        tag = element.tag.replace(_SVG, "")
        if tag not in _ALLOWED:
            raise RenderError(f"Graphviz wrote an unexpected <{tag}> element: not inlined")
        for attribute, value in element.attrib.items():
            name = attribute.rpartition("}")[2].lower()
            if name.startswith("on") or (name == "href" and not value.startswith("#")):
                raise RenderError(f"Graphviz wrote an unexpected {name}= attribute: not inlined")
