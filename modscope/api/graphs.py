"""Architecture graphs: compose the static report and (with inputs) one recorded forward pass into a
``ModelGraph`` of nodes, edges and clusters. Drawing lives in ``modscope.render.graph``.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn

from modscope.api.static import summary
from modscope.collect.graphs.dataflow import Flow, FlowNode, named_tensors, recording
from modscope.collect.graphs.graph_fold import collapse_run, contract, prune_dead_ops
from modscope.collect.graphs.layer_info import hyperparams
from modscope.collect.hooks import module_hooks, preserved_state
from modscope.collect.recursion import recursion_note, recursion_room
from modscope.core.walk import copy_if_lazy, join, set_training, visits
from modscope.errors import ForwardError, UsageError
from modscope.load.input_errors import explain
from modscope.load.inputs import as_model_inputs
from modscope.render.collapse import group_children
from modscope.reports import ModuleInfo, SharedKind, SummaryReport
from modscope.reports.graph import (
    ColorBy,
    EdgeKind,
    GraphCluster,
    GraphEdge,
    GraphMode,
    GraphNode,
    GraphStyle,
    ModelGraph,
    NodeKind,
)


def graph(
    model: nn.Module,
    inputs: Any = None,
    *,
    depth: int | None = None,
    collapse: bool = True,
    color: str | ColorBy = ColorBy.NONE,
    rankdir: str = "TB",
    target: str | None = None,
) -> ModelGraph:
    """The module hierarchy of ``model`` or, given ``inputs``, the dataflow of one forward pass.

    ``inputs``: a tensor, a tuple (positional), a dict (keyword) or ``ModelInputs``. The forward pass runs
    in eval mode without gradients; the model is left exactly as it was. ``depth`` draws modules deeper
    than that as part of their ancestor; ``collapse`` folds runs of identical blocks into one ``x N``.

    >>> g = modscope.graph(torchvision.models.resnet50(), torch.randn(1, 3, 224, 224), depth=2)
    >>> g.render("resnet50.svg")
    """
    if depth is not None and depth < 0:
        raise UsageError(f"depth must be 0 or more, got {depth}")
    style = _style(color, rankdir)
    if inputs is not None:
        model = copy_if_lazy(model)  # a lazy model's first forward would materialise it in place
    report = summary(model, target=target)
    tree = _Tree(report, model, depth)
    if inputs is None:
        nodes, edges, clusters = _hierarchy(tree, collapse)
        mode = GraphMode.HIERARCHY
    else:
        flow, repeats = _dataflow(model, as_model_inputs(inputs), tree, collapse)
        nodes, edges, clusters = _from_flow(flow, tree, repeats)
        mode = GraphMode.DATAFLOW
    nodes, clusters = _absorb_wrappers(nodes, clusters)
    edges += _tied_edges(report, tree, {n.id for n in nodes if n.kind is NodeKind.MODULE})
    nodes = [_with_tied(n, report) for n in nodes]
    return ModelGraph(
        report.model, mode, tuple(nodes), tuple(edges), tuple(clusters), report.totals.params, depth, style
    )


def _style(color, rankdir: str) -> GraphStyle:
    try:
        color = ColorBy(color)
    except ValueError:
        raise UsageError(f"color must be one of {', '.join(c.value for c in ColorBy)}, got {color!r}")
    if rankdir.upper() not in ("TB", "LR", "BT", "RL"):
        raise UsageError(f"rankdir must be TB, LR, BT or RL, got {rankdir!r}")
    return GraphStyle(color, rankdir.upper())


class _Tree:
    """The module tree as the graph sees it: which modules are boxes (leaves) and which are clusters.

    In dataflow graphs containers without a forward of their own (ModuleList, ModuleDict) are looked
    through: they are never called, so their children are the ones that become boxes or clusters.
    """

    def __init__(self, report: SummaryReport, model: nn.Module, depth: int | None):
        self.info = {m.name: m for m in report.modules}
        self.modules = {v.name: v.module for v in visits(model) if v.first}
        self.depth = depth
        self.parent = {c: m.name for m in report.modules for c in m.children}

    def is_leaf(self, info: ModuleInfo) -> bool:
        return not info.children or (self.depth is not None and info.depth >= self.depth)

    def callable(self, name: str) -> bool:
        return type(self.modules[name]).forward is not nn.Module.forward

    def flow_leaves(self) -> tuple[dict[str, nn.Module], list[tuple[str, nn.Module]]]:
        """Dataflow boxes (name -> module) and the modules to hook: everything not inside a box.

        Depth counts only modules that are called, so ``down.0`` under a ModuleList is at depth 1.
        """
        leaves: dict[str, nn.Module] = {}
        hooked: list[tuple[str, nn.Module]] = []
        stack = [("", 0)]
        while stack:
            name, level = stack.pop()
            info, module = self.info[name], self.modules[name]
            hooked.append((name, module))
            called = bool(name) and self.callable(name)
            level += called
            if called and (not info.children or (self.depth is not None and level >= self.depth)):
                leaves[name] = module
            elif info.children:
                stack.extend((c, level) for c in reversed(info.children))
        return leaves, hooked

    def runs(self, collapse: bool) -> list[list[str]]:
        """Runs of identical consecutive siblings (outer runs first), each as its member names."""
        out: list[list[str]] = []
        if not collapse:
            return out
        for info in self.info.values():  # pre-order
            kids = [self.info[c] for c in info.children]
            names = [k.name for k in kids]
            for row in group_children(kids):
                if row.count > 1:
                    start = names.index(row.module.name)
                    out.append(names[start : start + row.count])
        return out

    def cluster_of(self, name: str, clusters: set[str]) -> str:
        """Nearest enclosing module of ``name`` that is drawn as a cluster ("" = top level)."""
        parent = self.parent.get(name, "")
        while parent and parent not in clusters:
            parent = self.parent.get(parent, "")
        return parent


def _hierarchy(tree: _Tree, collapse: bool):
    """Leaves as nodes, containers as nested clusters, runs of identical siblings shown once as ``x N``."""
    nodes: list[GraphNode] = []
    clusters: list[GraphCluster] = []
    root = tree.info[""]
    if not root.children:
        return [_module_node(tree, root, "", root.type or "model")], [], []
    stack = []
    for row in reversed(group_children([tree.info[c] for c in root.children], collapse)):
        stack.append((row.module, "", row.count, _row_label(row)))
    while stack:
        info, cluster, repeat, label = stack.pop()
        if tree.is_leaf(info):
            nodes.append(_module_node(tree, info, cluster, label, repeat=repeat))
            continue
        clusters.append(GraphCluster(info.name, label, cluster, info.type, info.params_total, info.trainable_total, repeat))
        rows = group_children([tree.info[c] for c in info.children], collapse)
        stack.extend((r.module, info.name, r.count, _row_label(r)) for r in reversed(rows))
    return nodes, [], clusters


def _row_label(row) -> str:
    return run_label(row.module.name, row.last) if row.count > 1 else row.module.name


def _module_node(tree: _Tree, info: ModuleInfo, cluster: str, label: str, node_id: str = "", **extra) -> GraphNode:
    module = tree.modules.get(info.name)
    return GraphNode(
        id=node_id or info.name,
        kind=NodeKind.MODULE,
        label=label,
        cluster=cluster,
        module=info.name,
        type=info.type,
        detail=hyperparams(module) if module is not None else "",
        params=info.params_total,
        trainable=info.trainable_total,
        **extra,
    )


def _dataflow(model: nn.Module, inputs, tree: _Tree, collapse: bool) -> tuple[Flow, dict[str, tuple[str, int]]]:
    """Run one forward pass under the recorder, then simplify: dead ends, opaque modules, repeats."""
    if isinstance(model, torch.jit.ScriptModule):
        raise UsageError(
            "a TorchScript module runs compiled code that modscope cannot watch: draw its hierarchy "
            "(no inputs) or load the Python model to see its dataflow"
        )
    leaves, hooked = tree.flow_leaves()
    split = {name for name in leaves if tree.info[name].params_total == 0 and tree.info[name].buffers_total == 0}
    depth = max(v.depth for v in visits(model))
    with preserved_state(model), torch.no_grad(), recursion_room(depth):
        set_training(model, False)
        with recording(leaves, split, _tensor_names(model)) as rec:
            with module_hooks(model, pre=rec.pre, post=rec.post, modules=hooked):
                for label, tensor in _named_inputs(model, inputs):
                    rec.add_input(label, tensor)
                try:
                    output = inputs.call(model)
                except Exception as exc:
                    note = recursion_note(exc, depth)
                    raise ForwardError(f"the forward pass raised {explain(exc, model)}{note}") from exc
                for label, tensor in named_tensors(output, "output"):
                    rec.add_output(label, tensor)
    flow = rec.flow
    prune_dead_ops(flow)
    for name, calls in flow.expanded.items():
        if name and name not in flow.called_children:  # a container whose forward never called a child
            info = tree.info[name]
            node = FlowNode(name, NodeKind.MODULE, name, name, info.type, hyperparams(tree.modules[name]), calls)
            contract(flow, name, node)
    repeats: dict[str, tuple[str, int]] = {}
    for run in tree.runs(collapse):
        if collapse_run(flow, run):
            repeats[run[0]] = (run_label(run[0], run[-1]), len(run))
    return flow, repeats


def run_label(first: str, last: str) -> str:
    """``layers.0``, ``layers.31`` -> ``layers.0-31``; ``enc.layer_0``, ``enc.layer_11`` -> ``enc.layer_0-11``."""
    stem, _, a = first.rpartition(".")
    b = last.rpartition(".")[2]
    common = len(os.path.commonprefix([a, b]))
    while common and a[common - 1].isdigit():
        common -= 1
    text = f"{a}-{b[common:]}"
    return f"{stem}.{text}" if stem else text


def _named_inputs(model: nn.Module, inputs):
    """Input tensors named after the forward's parameters (``image``, ``metadata``) where possible."""
    try:
        bound = inspect.signature(model.forward).bind(*inputs.args, **inputs.kwargs).arguments
    except (TypeError, ValueError):
        bound = {f"input{i}": a for i, a in enumerate(inputs.args)} | dict(inputs.kwargs)
    for name, value in bound.items():
        yield from named_tensors(value, name)


def _tensor_names(model: nn.Module) -> dict[int, str]:
    """id -> name of every parameter and buffer, and of plain tensor attributes (``rand_weight``)."""
    names: dict[int, str] = {}
    for v in visits(model):
        for key, t in (*v.module._parameters.items(), *v.module._buffers.items()):
            if t is not None:
                names.setdefault(id(t), join(v.name, key))
    for v in visits(model):
        for key, value in vars(v.module).items():
            if isinstance(value, torch.Tensor) and not key.startswith("_"):
                names.setdefault(id(value), join(v.name, key))
    return names


def _from_flow(flow: Flow, tree: _Tree, repeats: dict[str, tuple[str, int]]):
    """Flow nodes -> GraphNodes inside the clusters of their enclosing modules."""
    owners = {n.scope for n in flow.nodes.values() if n.kind is NodeKind.OP}
    for n in flow.nodes.values():
        if n.kind is NodeKind.MODULE:
            owners.add(tree.parent.get(n.scope, ""))
    cluster_names: set[str] = set()
    for name in owners:
        while name:
            if name in flow.expanded:  # containers that ran their own forward
                cluster_names.add(name)
            name = tree.parent.get(name, "")
    nodes = []
    for n in flow.nodes.values():
        if n.kind is NodeKind.MODULE:
            info = tree.info[n.scope]
            label, repeat = repeats.get(n.scope, (n.scope, 1))
            nodes.append(
                _module_node(
                    tree, info, tree.cluster_of(n.scope, cluster_names), label,
                    node_id=n.id, calls=n.calls, call=n.call, repeat=repeat,
                )
            )
        else:
            cluster = n.scope if n.kind is NodeKind.OP else ""
            nodes.append(
                GraphNode(
                    n.id, n.kind, n.label, cluster, module=n.scope if n.kind is NodeKind.OP else "",
                    type=n.type, detail=n.detail, calls=n.calls, shape=n.shape, uses=tuple(n.uses),
                )
            )
    clusters = []
    for info in tree.info.values():  # pre-order: parents before children
        if info.name in cluster_names:
            label, repeat = repeats.get(info.name, (info.name, 1))
            parent = tree.cluster_of(info.name, cluster_names)
            clusters.append(
                GraphCluster(info.name, label, parent, info.type, info.params_total, info.trainable_total, repeat)
            )
    edges = [GraphEdge(src, dst, label) for src, dst, label in flow.edges]
    return nodes, edges, clusters


def _absorb_wrappers(nodes: list[GraphNode], clusters: list[GraphCluster]):
    """A cluster whose only content is one child cluster is one box too many: a plain child is taken over
    by the wrapper (DoubleConv > block), a ``x N`` child takes the wrapper's place (encoder.layers > x 12)."""
    holds_nodes = {n.cluster for n in nodes}
    kids: dict[str, list[GraphCluster]] = {}
    for c in clusters:
        kids.setdefault(c.parent, []).append(c)
    into: dict[str, str] = {}  # removed cluster -> the cluster its content now belongs to
    for c in clusters:  # pre-order: a chain of wrappers folds step by step
        only = kids.get(c.id, [])
        if c.id in holds_nodes or len(only) != 1:
            continue
        if only[0].repeat == 1:
            into[only[0].id] = c.id
        else:
            into[c.id] = c.parent
    if not into:
        return nodes, clusters

    def final(cluster_id: str) -> str:
        while cluster_id in into:
            cluster_id = into[cluster_id]
        return cluster_id

    nodes = [replace(n, cluster=final(n.cluster)) for n in nodes]
    clusters = [replace(c, parent=final(c.parent)) for c in clusters if c.id not in into]
    return nodes, clusters


def _tied_edges(report: SummaryReport, tree: _Tree, visible: set[str]) -> list[GraphEdge]:
    """Undirected edges between drawn modules that share a parameter or buffer object."""
    edges = []
    for group in report.shared:
        if group.kind is not SharedKind.TIED:
            continue
        holders: dict[str, list[str]] = {}
        for name in group.names:
            module, _, _ = name.rpartition(".")
            node = _visible_ancestor(module, tree, visible)
            if node is not None:
                holders.setdefault(node, []).append(name)
        ids = list(holders)
        for other in ids[1:]:
            edges.append(GraphEdge(ids[0], other, " = ".join(group.names), EdgeKind.TIED))
    return edges


def _visible_ancestor(module: str, tree: _Tree, visible: set[str]) -> str | None:
    while True:
        if module in visible:
            return module
        if not module:
            return None
        module = tree.parent.get(module, "")


def _with_tied(node: GraphNode, report: SummaryReport) -> GraphNode:
    if node.kind is not NodeKind.MODULE:
        return node
    tied = tuple(
        name
        for group in report.shared
        if group.kind is SharedKind.TIED
        for name in group.names
        if name.rpartition(".")[0] == node.module or (node.module and name.startswith(node.module + "."))
    )
    return replace(node, tied=tied) if tied else node
