"""Architecture graphs as plain data: nodes, edges and clusters (``modscope.graph``).

A graph is either the module *hierarchy* (no forward pass) or the *dataflow* of one recorded forward pass.
Clusters are container modules, keyed by their module name; nodes are leaf modules (or containers shown
as one box below ``depth``), tensor operations between modules, and the model's inputs and outputs.
The report never draws itself: ``source``/``render``/``_repr_svg_`` reach ``modscope.render.graph`` through
``report.presented``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from modscope.reports.presented import present
from modscope.reports.static import ModelRef


class GraphMode(str, Enum):
    HIERARCHY = "hierarchy"  # the module tree, no forward pass
    DATAFLOW = "dataflow"  # what one forward pass actually ran


class NodeKind(str, Enum):
    MODULE = "module"  # a leaf module, or a container drawn as one box (below depth, or never calls children)
    OP = "op"  # a tensor operation between modules (add, cat, reshape, a functional call)
    INPUT = "input"
    OUTPUT = "output"


class EdgeKind(str, Enum):
    DATA = "data"  # a tensor flowing from producer to consumer (label: its shape)
    TIED = "tied"  # two modules that share a parameter or buffer (undirected; label: the tensor names)


class ColorBy(str, Enum):
    NONE = "none"
    PARAMS = "params"  # fill modules by parameter count (log scale)


@dataclass(frozen=True)
class GraphNode:
    """One box or oval. ``module`` is the module's state_dict name (module nodes) or the module whose
    forward ran the op (op nodes); ``repeat`` > 1 stands for that many identical consecutive modules."""

    id: str
    kind: NodeKind
    label: str  # module name, op name, input/output name
    cluster: str = ""  # id of the enclosing cluster ("" = top level)
    module: str = ""
    type: str = ""  # module class name, or the op's torch function (torch.cat, Tensor.add)
    detail: str = ""  # key hyper-parameters ("3->64 k7 s2") or op arguments ("[:, 0]")
    params: int = 0  # parameters of the module's subtree
    trainable: int = 0
    calls: int = 1  # forward calls recorded for this node (dataflow)
    call: int = 0  # >0: this node is the call-th call of a parameter-free module drawn once per call
    repeat: int = 1
    shape: str = ""  # inputs/outputs: the tensor's shape ("1x3x224x224")
    uses: tuple[str, ...] = ()  # ops: parameters/buffers read directly (bias, pos_embedding)
    tied: tuple[str, ...] = ()  # parameters/buffers of this module shared with other modules

    @property
    def frozen(self) -> bool:
        """Has parameters and none of them trains."""
        return self.params > 0 and self.trainable == 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = self.kind.value
        out["uses"] = list(self.uses)
        out["tied"] = list(self.tied)
        return out


@dataclass(frozen=True)
class GraphEdge:
    src: str
    dst: str
    label: str = ""
    kind: EdgeKind = EdgeKind.DATA

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "label": self.label, "kind": self.kind.value}


@dataclass(frozen=True)
class GraphCluster:
    """A container module drawn as a box around its children; ``repeat`` > 1 for a collapsed run."""

    id: str
    label: str  # module name, or "layers.1-11" for a run
    parent: str = ""  # enclosing cluster id ("" = top level)
    type: str = ""
    params: int = 0
    trainable: int = 0
    repeat: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GraphStyle:
    """How to draw (not what): colouring and direction. ``rankdir`` is Graphviz's: TB or LR."""

    color: ColorBy = ColorBy.NONE
    rankdir: str = "TB"


@dataclass(frozen=True)
class ModelGraph:
    """The architecture graph of one model (``modscope.graph``): plain data plus drawing helpers.

    >>> g = modscope.graph(model, torch.randn(1, 3, 224, 224), depth=2)
    >>> g.render("net.svg");  print(g.source[:40])
    """

    model: ModelRef
    mode: GraphMode
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    clusters: tuple[GraphCluster, ...]
    params: int = 0  # whole-model total
    depth: int | None = None
    style: GraphStyle = field(default_factory=GraphStyle)

    def node(self, node_id: str) -> GraphNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    @property
    def source(self) -> str:
        """The graph in Graphviz's DOT language."""
        return present(self, "dot")

    def render(self, path: str | Path, format: str | None = None) -> Path:
        """Write the graph to ``path`` (format from the suffix unless given: svg, png, pdf, dot).

        Every format but dot needs Graphviz's ``dot`` program.
        """
        return present(self, "file", path, format)

    def _repr_svg_(self) -> str | None:
        """Jupyter display; None (plain repr) when Graphviz's ``dot`` is not installed."""
        return present(self, "svg")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "modscope.graph/1",
            "model": asdict(self.model),
            "mode": self.mode.value,
            "depth": self.depth,
            "params": self.params,
            "nodes": [n.to_dict() for n in self.nodes],
            "edges": [e.to_dict() for e in self.edges],
            "clusters": [c.to_dict() for c in self.clusters],
        }
