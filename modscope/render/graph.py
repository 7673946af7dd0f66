"""Draw a ``ModelGraph``: DOT text built here, pictures (svg, png, pdf) by Graphviz's real ``dot`` program.

Clusters become nested ``subgraph cluster_...`` boxes; module nodes are rounded boxes with their key
hyper-parameters and parameter count; tensor ops are small ovals; edges carry tensor shapes.
"""
from __future__ import annotations

import math
import shutil
from html import escape
from pathlib import Path

from modscope.core.text import human_count
from modscope.errors import RenderError, UsageError
from modscope.render.graphviz import dot_timeout, run_dot
from modscope.reports.graph import ColorBy, EdgeKind, GraphCluster, GraphMode, GraphNode, ModelGraph, NodeKind

FORMATS = ("svg", "png", "pdf", "dot")
FONT = "Helvetica"
_HINT = (
    "Graphviz's `dot` program was not found on PATH: install Graphviz (apt-get install graphviz, "
    "brew install graphviz or conda install graphviz), or write DOT text with --format dot"
)
# Light to dark (all light enough for dark text): parameter counts on a log scale.
_PALETTE = ("#fff9e0", "#ffeeb8", "#ffe08f", "#ffcc70", "#ffb655", "#ff9d45", "#f5823a")
_FILL = {
    NodeKind.MODULE: "#dce9f7",
    NodeKind.OP: "#fff4cc",
    NodeKind.INPUT: "#d5f5e3",
    NodeKind.OUTPUT: "#fadbd8",
}
_FROZEN_FILL = "#e5e5e5"
_OP_FILL_COLORED = "#ececec"  # with --color params, ops must not look like small modules
_TIED_COLOR = "#c0392b"
_REPEAT_COLOR = "#7d3c98"
_GREY = "#555555"
# Above this layout cost (layout_cost) dot gets the layout for large graphs: no newrank, shapes as xlabels.
# Measured (docs/graphs.md): densenet121 at --depth 3 (cost 3,921) took 25 s of CPU with the full layout, 1.7 s
# with the large one; a 32-block transformer drawn expanded (cost 904) takes 0.8 s with the full layout.
LARGE_LAYOUT_COST = 2000
# Fewer crossing-minimisation passes and network-simplex iterations: positions are less tidy, found in a fraction
# of the time (newrank, which aligns ranks across clusters, costs most of all on such graphs).
_LARGE = "mclimit=0.3 nslimit=1"


def to_dot(graph: ModelGraph, ids: dict[str, str] | None = None, cluster_ids: dict[str, str] | None = None) -> str:
    """The DOT text of ``graph``: a pure function of the report.

    ``ids``/``cluster_ids`` map node/cluster ids to the ``id`` their SVG element gets (the HTML report links
    them to its module tree); drawn without when omitted.
    """
    ids, cluster_ids = ids or {}, cluster_ids or {}
    large = is_large(graph)
    lines = [f"digraph {_quote(graph.model.type)} {{"]
    lines += [
        f"  graph [rankdir={graph.style.rankdir} fontname={_quote(FONT)} fontsize=14 labelloc=t labeljust=l",
        f"         nodesep=0.25 ranksep=0.3 {_LARGE if large else 'newrank=true'} label=<{_title(graph, large)}>]",
        f"  node [fontname={_quote(FONT)} fontsize=11 margin=\"0.12,0.04\" penwidth=1]",
        f"  edge [fontname={_quote(FONT)} fontsize=9 color={_quote(_GREY)} fontcolor={_quote(_GREY)} arrowsize=0.7]",
    ]
    scale = _ParamScale(graph) if graph.style.color is ColorBy.PARAMS else None
    rows, order = _hierarchy_layout(graph) if graph.mode is GraphMode.HIERARCHY else ({}, [])
    children: dict[str, list[GraphCluster]] = {}
    for cluster in graph.clusters:
        children.setdefault(cluster.parent, []).append(cluster)
    members: dict[str, list[GraphNode]] = {}
    for node in graph.nodes:
        members.setdefault(node.cluster, []).append(node)
    # Explicit stack instead of recursion: ("open", cluster) / ("close", None) markers.
    lines += [_node_line(n, "", scale, "  ", ids.get(n.id)) for n in members.get("", [])]
    lines += rows.get("", [])
    stack: list[tuple[str, GraphCluster | None, int]] = [("open", c, 1) for c in reversed(children.get("", []))]
    while stack:
        action, cluster, level = stack.pop()
        pad = "  " * level
        if action == "close":
            lines.append(pad + "}")
            continue
        lines += _cluster_head(cluster, pad, level, cluster_ids.get(cluster.id))
        lines += [_node_line(n, cluster.id, scale, pad + "  ", ids.get(n.id)) for n in members.get(cluster.id, [])]
        lines += [pad + line for line in rows.get(cluster.id, [])]
        stack.append(("close", None, level))
        stack.extend(("open", c, level + 1) for c in reversed(children.get(cluster.id, [])))
    lines += [_edge_line(e, large) for e in graph.edges]
    lines += order
    lines.append("}")
    return "\n".join(lines) + "\n"


def is_large(graph: ModelGraph) -> bool:
    """Whether ``graph`` gets the layout for large graphs: its layout cost is over ``LARGE_LAYOUT_COST``."""
    return layout_cost(graph) > LARGE_LAYOUT_COST


def layout_cost(graph: ModelGraph) -> int:
    """Nodes plus the ranks every data edge skips, with nodes ranked by longest path in recorded order.

    dot puts a virtual node on every rank an edge crosses and orders them all, so this is roughly how many
    nodes it lays out: 904 for a 32-block transformer drawn expanded, 35,079 for timm's densenet121, whose
    every dense layer feeds all later ones.
    """
    index = {n.id: i for i, n in enumerate(graph.nodes)}
    pairs = sorted(
        (index[e.src], index[e.dst])
        for e in graph.edges
        if e.kind is EdgeKind.DATA and e.src in index and e.dst in index and index[e.src] < index[e.dst]
    )  # edges going back (loops) are dot's to reverse; they are few
    rank = [0] * len(graph.nodes)
    for src, dst in pairs:  # sorted by source, so a source's rank is final before it is used
        rank[dst] = max(rank[dst], rank[src] + 1)
    return len(graph.nodes) + sum(rank[dst] - rank[src] - 1 for src, dst in pairs)


def layout_note(graph: ModelGraph) -> str | None:
    """The line the CLI prints on stderr when ``graph`` is drawn with the layout for large graphs."""
    if not is_large(graph):
        return None
    return (
        f"{len(graph.nodes):,} nodes and {len(graph.edges):,} edges with many long edges: drawn with the layout "
        "for large graphs (shapes beside the edges, no rank alignment across boxes); --depth N draws less"
    )


def write(
    graph: ModelGraph, path: str | Path, format: str | None = None, timeout: float | None = None
) -> Path:
    """Write ``graph`` to ``path`` as svg/png/pdf (through ``dot``) or as DOT text (atomically: render/output.py)."""
    from modscope.render.output import check_output_path, write_output

    path = check_output_path(path, "graph file")
    fmt = resolve_format(path, format)
    data = to_dot(graph).encode() if fmt == "dot" else render_bytes(to_dot(graph), fmt, timeout)
    return write_output(path, data, "graph file")


def resolve_format(path: Path | None, format: str | None) -> str:
    """The explicit format, else the file suffix, else dot."""
    fmt = (format or (path.suffix.lstrip(".") if path is not None and path.suffix else "dot")).lower()
    fmt = {"gv": "dot"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise UsageError(f"unknown graph format {fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt


def render_bytes(source: str, fmt: str, timeout: float | None = None) -> bytes:
    """Run ``dot -T<fmt>`` on ``source``; RenderError with an install hint when dot is missing, or when it runs
    past ``timeout`` seconds (default: $MODSCOPE_DOT_TIMEOUT, else 120; 0 = no limit; render/graphviz.py)."""
    limit = dot_timeout(timeout)
    dot = shutil.which("dot")
    if dot is None:
        raise RenderError(_HINT)
    try:
        done = run_dot(dot, [f"-T{fmt}"], source.encode(), limit)
    except OSError as exc:
        raise RenderError(f"could not run Graphviz's dot ({exc}); {_HINT}")
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise RenderError(f"Graphviz's dot failed: {message[-1] if message else f'exit {done.returncode}'}")
    return done.stdout


def svg_or_none(graph: ModelGraph) -> str | None:
    """SVG text for notebooks, or None when dot is not installed (Jupyter then shows the plain repr)."""
    try:
        return render_bytes(to_dot(graph), "svg").decode()
    except RenderError:
        return None


class _ParamScale:
    """Parameter count -> fill colour, log scale up to the largest drawn module."""

    def __init__(self, graph: ModelGraph):
        counts = [n.params for n in graph.nodes if n.kind is NodeKind.MODULE and n.params > 0]
        self.low = math.log(min(counts, default=1))
        self.span = math.log(max(counts, default=1)) - self.low

    def fill(self, params: int) -> str:
        if params <= 0:
            return "#ffffff"
        level = (math.log(params) - self.low) / self.span if self.span > 0 else 1.0
        return _PALETTE[min(len(_PALETTE) - 1, int(level * len(_PALETTE)))]


def _title(graph: ModelGraph, large: bool) -> str:
    target = f" ({escape(graph.model.target)})" if graph.model.target else ""
    what = "module hierarchy" if graph.mode is GraphMode.HIERARCHY else "dataflow of one forward pass"
    depth = f", depth {graph.depth}" if graph.depth is not None else ""
    parts = [f"<b>{escape(graph.model.type)}</b>{target}  {human_count(graph.params)} params  ·  {what}{depth}"]
    if graph.style.color is ColorBy.PARAMS:
        top = max((n.params for n in graph.nodes if n.kind is NodeKind.MODULE), default=0)
        low = min((n.params for n in graph.nodes if n.kind is NodeKind.MODULE and n.params), default=0)
        parts.append(
            f'<font point-size="10">fill: parameters, log scale from {human_count(low)} (lightest) '
            f"to {human_count(top)} (darkest); white: none</font>"
        )
    if large:
        parts.append(f'<font point-size="10">{escape(layout_note(graph))}</font>')
    return "<br/>".join(parts)


def _cluster_head(cluster: GraphCluster, pad: str, level: int, element_id: str | None = None) -> list[str]:
    name = escape(_short(cluster.label, cluster.parent))
    counts = f"{human_count(cluster.params)} params{' each' if cluster.repeat > 1 else ''}" if cluster.params else ""
    info = "  ".join(x for x in (escape(cluster.type), counts) if x)
    if cluster.repeat > 1:
        head = f'<b>{name}</b>  <font color="{_REPEAT_COLOR}"><b>x {cluster.repeat}</b></font>  {info}'
        border = f'color="{_REPEAT_COLOR}" penwidth=2.2'
    else:
        head = f"<b>{name}</b>  {info}"
        border = 'color="#9a9a9a" penwidth=1'
    frozen = " (frozen)" if cluster.params and not cluster.trainable else ""
    fill = "#f4f6f8" if level % 2 else "#ffffff"
    element = f" id={_quote(element_id)}" if element_id else ""
    return [
        f"{pad}subgraph {_quote('cluster_' + cluster.id)} {{",
        f'{pad}  graph [label=<{head}{frozen}> style="rounded,filled" fillcolor="{fill}" {border} fontsize=11{element}]',
    ]


def _node_line(node: GraphNode, cluster: str, scale: _ParamScale | None, pad: str, element_id: str | None = None) -> str:
    attrs = {"label": f"<{_node_label(node, cluster)}>"}
    fill = _FILL[node.kind]
    if node.kind is NodeKind.MODULE:
        attrs["shape"] = "box"
        style = ["rounded", "filled"]
        if scale is not None:
            fill = scale.fill(node.params)
        if node.frozen:
            style.append("dashed")
            fill = fill if scale is not None else _FROZEN_FILL
        if node.repeat > 1:
            attrs["color"] = _quote(_REPEAT_COLOR)
            attrs["penwidth"] = "2.2"
        if node.tied:
            attrs["color"] = _quote(_TIED_COLOR)
            attrs["penwidth"] = "2"
        attrs["style"] = _quote(",".join(style))
    elif node.kind is NodeKind.OP:
        attrs.update(shape="ellipse", style="filled", fontsize="10", margin='"0.05,0.02"', height="0.3")
        fill = fill if scale is None else _OP_FILL_COLORED
    else:
        attrs.update(shape="box", style='"rounded,filled"', fontsize="10")
    attrs["fillcolor"] = _quote(fill)
    if element_id:
        attrs["id"] = _quote(element_id)
    body = " ".join(f"{k}={v}" for k, v in attrs.items())
    return f"{pad}{_quote(node.id)} [{body}]"


def _node_label(node: GraphNode, cluster: str) -> str:
    if node.kind in (NodeKind.INPUT, NodeKind.OUTPUT):
        return f"<b>{escape(node.label)}</b><br/>{escape(node.shape)}"
    if node.kind is NodeKind.OP:
        text = escape(node.label + (f" {node.detail}" if node.detail else ""))
        notes = []
        if node.uses:
            shown = [_short(u, cluster) for u in node.uses[:3]]
            more = f" +{len(node.uses) - 3}" if len(node.uses) > 3 else ""
            notes.append("with " + ", ".join(shown) + more)
        if node.calls > 1:
            notes.append(f"{node.calls} calls")
        if notes:
            text += f'<br/><font point-size="8" color="{_GREY}">{escape("; ".join(notes))}</font>'
        return text
    name = _short(node.label, cluster) or node.type
    if node.call > 1:
        name += f" #{node.call}"
    head = f"<b>{escape(name)}</b>"
    if node.repeat > 1:
        head += f'  <font color="{_REPEAT_COLOR}"><b>x {node.repeat}</b></font>'
    kind = node.type + (f" {node.detail}" if node.detail else "")
    facts = []
    if node.params:
        facts.append(human_count(node.params) + (" params each" if node.repeat > 1 else " params"))
    if node.calls > 1:
        facts.append(f"{node.calls} calls")
    if node.frozen:
        facts.append("frozen")
    if node.tied:
        facts.append("tied: " + ", ".join(_short(t, node.module) for t in node.tied))
    text = f'{head}<br/><font point-size="10">{escape(kind)}</font>'
    if facts:
        text += f'<br/><font point-size="9" color="{_GREY}">{escape("  ·  ".join(facts))}</font>'
    return text


def _edge_line(edge, large: bool) -> str:
    src, dst = _quote(edge.src), _quote(edge.dst)
    if edge.kind is EdgeKind.TIED:
        return (
            f'  {src} -> {dst} [dir=none style=dashed constraint=false color="{_TIED_COLOR}" '
            f'fontcolor="{_TIED_COLOR}" label={_quote("tied")}]'
        )
    # An edge label is a node of its own on a rank of its own to dot; an xlabel is placed after the layout.
    label = f" [{'xlabel' if large else 'label'}={_quote(' ' + edge.label)}]" if edge.label else ""
    return f"  {src} -> {dst}{label}"


def _hierarchy_layout(graph: ModelGraph, per_row: int = 4) -> tuple[dict[str, list[str]], list[str]]:
    """Hierarchy graphs have no dataflow: place each cluster's modules in rows of ``per_row`` (registration
    order, left to right) and stack rows and sub-clusters top-down with invisible edges."""
    index = {n.id: i for i, n in enumerate(graph.nodes)}  # nodes come in pre-order
    span: dict[str, tuple[int, int]] = {}  # cluster -> (first, last) node index in its subtree
    parent = {c.id: c.parent for c in graph.clusters}
    for node in graph.nodes:
        cluster = node.cluster
        while cluster:
            first, last = span.get(cluster, (index[node.id], index[node.id]))
            span[cluster] = (min(first, index[node.id]), max(last, index[node.id]))
            cluster = parent.get(cluster, "")
    items: dict[str, list[tuple[int, str, str]]] = {}  # cluster -> (position, top node id, bottom node id)
    for node in graph.nodes:
        items.setdefault(node.cluster, []).append((index[node.id], node.id, node.id))
    for cluster in graph.clusters:
        if cluster.id in span:
            first, last = span[cluster.id]
            items.setdefault(cluster.parent, []).append((first, graph.nodes[first].id, graph.nodes[last].id))
    rows: dict[str, list[str]] = {}
    order: list[str] = []
    bottom_left: dict[str, str] = {}  # cluster -> leftmost node of its lowest row
    for cluster in [c.id for c in reversed(graph.clusters) if c.id in items] + ([""] if "" in items else []):
        stacked: list[tuple[str, str]] = []  # (top-left, bottom-left) of each row or sub-cluster, top-down
        run: list[str] = []
        for position, top, _ in sorted(items[cluster]) + [(-1, "", "")]:
            node = graph.nodes[position] if top else None
            is_leaf = node is not None and node.id == top and node.cluster == cluster
            if is_leaf and len(run) < per_row:
                run.append(top)
                continue
            if run:
                rows.setdefault(cluster, []).append(_row(run))
                stacked.append((run[0], run[0]))
                run = [top] if is_leaf else []
            if top and not is_leaf:
                sub = next(c.id for c in graph.clusters if c.parent == cluster and span.get(c.id, (None,))[0] == position)
                stacked.append((top, bottom_left.get(sub, top)))
        if stacked:
            bottom_left[cluster] = stacked[-1][1]
        order += [
            f"  {_quote(a[1])} -> {_quote(b[0])} [style=invis weight=10]" for a, b in zip(stacked, stacked[1:])
        ]
    return rows, order


def _row(ids: list[str]) -> str:
    """Nodes on one rank, kept in order by invisible flat edges."""
    chain = " -> ".join(_quote(i) for i in ids)
    return "  {rank=same; " + " ".join(_quote(i) for i in ids) + (f"; {chain} [style=invis]" if len(ids) > 1 else "") + "}"


def _short(name: str, cluster: str) -> str:
    """``layer1.0.conv1`` inside cluster ``layer1.0`` -> ``conv1``."""
    if cluster and name.startswith(cluster + "."):
        return name[len(cluster) + 1 :]
    return name


def _quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'
