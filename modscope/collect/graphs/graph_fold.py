"""Simplify a recorded ``Flow`` so a person can read it: drop dead ends, fold opaque modules into one
node, and fold runs of identical chained blocks (``layers.0`` .. ``layers.31``) into their first block.

All functions work on plain node/edge tables; module structure comes from the static report.
"""
from __future__ import annotations

from collections import deque

from modscope.collect.graphs.dataflow import Flow, FlowNode
from modscope.reports.graph import NodeKind


def within(name: str, prefix: str) -> bool:
    """``layers.1.mlp`` is within ``layers.1``; ``layers.10`` is not; everything is within the root ""."""
    return not prefix or name == prefix or name.startswith(prefix + ".")


def prune_dead_ops(flow: Flow) -> None:
    """Remove op nodes whose results reach no module and no output (loop conditions, debug prints)."""
    preds: dict[str, list[str]] = {}
    for src, dst, _ in flow.edges:
        preds.setdefault(dst, []).append(src)
    live = {i for i, n in flow.nodes.items() if n.kind is not NodeKind.OP}
    queue = deque(live)
    while queue:
        for src in preds.get(queue.popleft(), ()):
            if src not in live:
                live.add(src)
                queue.append(src)
    _keep(flow, live)


def contract(flow: Flow, name: str, replacement: FlowNode) -> None:
    """Replace every node of module ``name``'s subtree by ``replacement`` (edges rerouted, internal dropped)."""
    inside = {i for i, n in flow.nodes.items() if n.kind in (NodeKind.OP, NodeKind.MODULE) and within(n.scope, name)}
    if not inside:
        return
    first = next(i for i in flow.nodes if i in inside)
    nodes: dict[str, FlowNode] = {}
    for node_id, node in flow.nodes.items():
        if node_id == first:
            nodes[replacement.id] = replacement
        elif node_id not in inside:
            nodes[node_id] = node
    edges: dict[tuple[str, str, str], None] = {}
    for src, dst, label in flow.edges:
        src = replacement.id if src in inside else src
        dst = replacement.id if dst in inside else dst
        if src != dst or src != replacement.id:
            edges[(src, dst, label)] = None
    flow.nodes, flow.edges = nodes, edges


def collapse_run(flow: Flow, run: list[str]) -> bool:
    """Fold blocks ``run[1:]`` into ``run[0]`` when they form a clean chain; False (nothing done) otherwise.

    Clean: each block's inputs come from the previous block (or from the same outside producers as the
    first block's), its outputs go only to the next block, and the last block's outgoing edges leave from
    nodes that have a counterpart in the first block.
    """
    position = {name: k for k, name in enumerate(run)}
    member: dict[str, int] = {}
    for node_id, node in flow.nodes.items():  # the run member a node's scope is within (one lookup per level)
        scope = node.scope
        while scope and scope not in position:
            scope = scope.rpartition(".")[0]
        if scope in position:
            member[node_id] = position[scope]
    if len(set(member.values())) < len(run):
        return False
    last = len(run) - 1
    pairs = {(s, d) for s, d, _ in flow.edges}
    kept: dict[tuple[str, str, str], None] = {}
    for edge in flow.edges:
        src, dst, label = edge
        ks, kd = member.get(src), member.get(dst)
        if ks is None and kd is None:
            kept[edge] = None
        elif ks == kd:
            if ks == 0:
                kept[edge] = None
        elif ks is not None and kd is not None:
            if kd != ks + 1:
                return False
        elif kd is not None:  # into block kd from outside the run
            if kd == 0:
                kept[edge] = None
            elif (src, _counterpart(dst, run[kd], run[0])) not in pairs:
                return False
        else:  # out of block ks to outside the run
            if ks != last:
                return False
            twin = _counterpart(src, run[ks], run[0])
            if twin not in flow.nodes:
                return False
            kept[(twin, dst, label)] = None
    flow.nodes = {i: n for i, n in flow.nodes.items() if member.get(i, 0) == 0}
    flow.edges = kept
    return True


def _counterpart(node_id: str, block: str, first: str) -> str:
    """``layers.7.mlp/add#2`` -> ``layers.0.mlp/add#2`` (ids start with the owning module's name)."""
    return first + node_id[len(block):] if block else node_id


def _keep(flow: Flow, keep: set[str]) -> None:
    flow.nodes = {i: n for i, n in flow.nodes.items() if i in keep}
    flow.edges = {e: None for e in flow.edges if e[0] in keep and e[1] in keep}
