"""Record the dataflow of one forward pass as it actually ran: which module or tensor op fed which.

Module hooks (``modscope.collect.hooks.module_hooks``) see module calls; a ``TorchFunctionMode`` sees the tensor
operations between them (residual adds, ``torch.cat``, reshapes, functional calls in a custom forward).
Every tensor remembers the node that produced it (a weak map, so nothing is kept alive), and a consumer
adds an edge from that producer. Python control flow and data-dependent loops need no special support:
only what ran is recorded. Inside a leaf module (no children, or at the depth limit) nothing is recorded.

Op nodes are keyed by (module, function, call site, producers), so a straight-line loop over different
modules unrolls, while an op that feeds itself around a loop (``while ...: x /= 2``) stays one node.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode, resolve_name
from torch.utils.weak import WeakIdKeyDictionary

from modscope.collect.forward.structure import iter_tensors
from modscope.collect.graphs.layer_info import hyperparams
from modscope.core.text import shape_str
from modscope.reports.graph import NodeKind

_MAX_SPLIT_CALLS = 16  # a parameter-free module gets one node per call, up to this many
_LOOP_SEARCH = 256  # nodes visited when looking for a loop-carried dependency
_MAX_USES = 3  # parameter names remembered per op
# Calls that only relabel a tensor: the output keeps the input's producer, no node is drawn.
_PASSTHROUGH = frozenset(
    {"detach", "detach_", "contiguous", "clone", "requires_grad_", "to", "cpu", "cuda", "float", "double",
     "half", "bfloat16", "type", "type_as", "data", "retain_grad", "align_to"}
)
_TRANSPOSE_GETTERS = {"T": "transpose", "mT": "transpose", "H": "adjoint", "mH": "adjoint"}
# Frames in these packages are not "the user's line" of an op.
_SKIP_DIRS = (
    os.path.dirname(torch.__file__) + os.sep,
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,  # modscope
)


@dataclass
class FlowNode:
    """A node while recording. ``scope`` is the module whose forward created it (module nodes: itself)."""

    id: str
    kind: NodeKind
    label: str
    scope: str
    type: str = ""
    detail: str = ""
    calls: int = 0
    call: int = 0
    shape: str = ""
    uses: list[str] = field(default_factory=list)


@dataclass
class Flow:
    """The recorded graph: nodes in creation order, edges as an ordered set of (src, dst, label)."""

    nodes: dict[str, FlowNode] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], None] = field(default_factory=dict)
    expanded: dict[str, int] = field(default_factory=dict)  # container -> calls recorded with its insides
    called_children: set[str] = field(default_factory=set)  # containers that called a hooked submodule

    def add_edge(self, src: str, dst: str, label: str) -> None:
        self.edges[(src, dst, label)] = None


class _Recorder(TorchFunctionMode):
    """Builds a ``Flow`` from module hooks (``pre``/``post``) and the tensor ops seen in between."""

    def __init__(self, leaves: dict[str, nn.Module], split: set[str], tensor_names: dict[int, str]):
        super().__init__()
        self.flow = Flow()
        self.leaves = leaves  # module name -> module, drawn as one node each
        self.split = split  # parameter-free leaves: one node per call
        self.tensor_names = tensor_names  # id(parameter/buffer) -> its name
        self.producer: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> node id
        self.refs: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> names of parameters it derives from
        self.stack: list[tuple[str, str | None, bool]] = []  # active calls: (name, leaf node id, inside a leaf)
        self.quiet = 0  # > 0 inside a leaf module: ops are not recorded
        self.busy = 0  # > 0 inside our own bookkeeping
        self.module_calls: dict[str, int] = {}
        self.by_key: dict[tuple, str] = {}  # op key -> node id
        self.by_site: dict[tuple, list[str]] = {}  # (scope, fn, site) -> node ids
        self.op_count: dict[str, int] = {}
        self.preds: dict[str, set[str]] = {}  # node id -> producers feeding it (for the loop search)

    # --- inputs and outputs -------------------------------------------------------------------------
    def add_input(self, label: str, tensor: torch.Tensor) -> None:
        with self._busy():
            node_id = f"input:{label}"
            self.flow.nodes[node_id] = FlowNode(node_id, NodeKind.INPUT, label, "", shape=_shape(tensor), calls=1)
            self.producer[tensor] = node_id

    def add_output(self, label: str, tensor: torch.Tensor) -> None:
        with self._busy():
            node_id = f"output:{label}"
            self.flow.nodes[node_id] = FlowNode(node_id, NodeKind.OUTPUT, label, "", shape=_shape(tensor), calls=1)
            src = self.producer.get(tensor)
            if src is not None:
                self._edge(src, node_id, _shape(tensor))

    def _edge(self, src: str, dst: str, label: str) -> None:
        self.flow.add_edge(src, dst, label)
        self.preds.setdefault(dst, set()).add(src)

    @contextlib.contextmanager
    def _busy(self):
        """Our own tensor reads (t.shape) pass through the mode: keep them out of the graph."""
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1

    # --- module hooks -------------------------------------------------------------------------------
    def pre(self, name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.quiet:  # a hooked module called from inside a leaf: part of that leaf
            self.stack.append((name, None, True))
            self.quiet += 1
            return
        if self.stack:
            self.flow.called_children.add(self.stack[-1][0])
        if name not in self.leaves:
            self.flow.expanded[name] = self.flow.expanded.get(name, 0) + 1
            self.stack.append((name, None, False))
            return
        with self._busy():
            node = self._module_node(name, module)
            for tensor in iter_tensors((args, kwargs), limit=None):
                src = self.producer.get(tensor)
                if src is not None:
                    self._edge(src, node.id, _shape(tensor))
        self.stack.append((name, node.id, True))
        self.quiet += 1

    def post(self, name: str, module: nn.Module, args, kwargs, output, error) -> None:
        if not self.stack or self.stack[-1][0] != name:
            return  # a call that started before recording did
        _, node_id, entered = self.stack.pop()
        if entered:
            self.quiet -= 1
        if node_id is not None and error is None:
            for tensor in iter_tensors(output, limit=None):
                self.producer[tensor] = node_id

    def _module_node(self, name: str, module: nn.Module) -> FlowNode:
        calls = self.module_calls[name] = self.module_calls.get(name, 0) + 1
        call = min(calls, _MAX_SPLIT_CALLS) if name in self.split else 0
        node_id = f"{name}#{call}" if call > 1 else name
        node = self.flow.nodes.get(node_id)
        if node is None:
            node = FlowNode(node_id, NodeKind.MODULE, name, name, type(module).__name__, hyperparams(module), call=call)
            self.flow.nodes[node_id] = node
        node.calls += 1
        return node

    # --- tensor operations --------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.quiet or self.busy:
            return func(*args, **kwargs)
        inputs = list(iter_tensors((args, kwargs), limit=None))
        sources = [(t, self.producer.get(t)) for t in inputs]
        result = func(*args, **kwargs)
        name, inplace = _op_name(func)
        outputs = list(iter_tensors(result, limit=None))
        if inplace and args and isinstance(args[0], torch.Tensor) and not any(o is args[0] for o in outputs):
            outputs.append(args[0])
        if not outputs or name is None:
            return result
        known = [(t, src) for t, src in sources if src is not None]
        uses = self._uses(inputs)
        if not known:
            if uses:  # derived from parameters only (class_token.expand ...): remember for the consumer
                for out in outputs:
                    self.refs[out] = uses
            return result
        if name in _PASSTHROUGH:
            for out in outputs:
                self.producer[out] = known[0][1]
            return result
        node = self._op_node(func, name, tuple(dict.fromkeys(src for _, src in known)), args)
        node.calls += 1
        node.uses.extend(u for u in uses if u not in node.uses)
        for tensor, src in known:
            self._edge(src, node.id, _shape(tensor))
        for out in outputs:
            self.producer[out] = node.id
        return result

    def _uses(self, inputs: list[torch.Tensor]) -> tuple[str, ...]:
        names: dict[str, None] = {}
        for t in inputs:
            direct = self.tensor_names.get(id(t))
            for n in (direct,) if direct else self.refs.get(t, ()):
                names[n] = None
        return tuple(names)[:_MAX_USES]

    def _op_node(self, func, name: str, producers: tuple[str, ...], args) -> FlowNode:
        scope = self.stack[-1][0] if self.stack else ""
        site = _call_site()
        key = (scope, name, site, producers)
        node_id = self.by_key.get(key)
        if node_id is None:
            same_site = self.by_site.setdefault((scope, name, site), [])
            node_id = self._loop_node(same_site, producers, scope) if same_site else None
            if node_id is None:
                count = self.op_count[scope] = self.op_count.get(scope, 0) + 1
                node_id = f"{scope}/{name}#{count}"
                detail = _index_str(args[1]) if name == "getitem" and len(args) > 1 else ""
                self.flow.nodes[node_id] = FlowNode(node_id, NodeKind.OP, name, scope, _qualified(func, name), detail)
                same_site.append(node_id)
            self.by_key[key] = node_id
        return self.flow.nodes[node_id]

    def _loop_node(self, candidates: list[str], producers: tuple[str, ...], scope: str) -> str | None:
        """A node of the same call site that (through ops of this scope) produced an input: a loop."""
        wanted, seen, frontier = set(candidates), set(), list(producers)
        while frontier and len(seen) < _LOOP_SEARCH:
            node_id = frontier.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            if node_id in wanted:
                return node_id
            node = self.flow.nodes.get(node_id)
            if node is not None and node.kind is NodeKind.OP and node.scope == scope:
                frontier.extend(self.preds.get(node_id, ()))
        return None


@contextlib.contextmanager
def recording(leaves: dict[str, nn.Module], split: set[str], tensor_names: dict[int, str]) -> Iterator[_Recorder]:
    """The recorder as a context manager: its TorchFunctionMode is active inside, popped on exit."""
    recorder = _Recorder(leaves, split, tensor_names)
    with recorder:
        yield recorder


def named_tensors(value: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) pairs: ``out``, ``out[0]``, ``out['logits']`` (for the model's inputs and outputs)."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from named_tensors(item, f"{prefix}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from named_tensors(item, f"{prefix}[{key!r}]")
    elif hasattr(value, "__dataclass_fields__"):
        for key in value.__dataclass_fields__:
            yield from named_tensors(getattr(value, key, None), f"{prefix}.{key}")


def _shape(t: torch.Tensor) -> str:
    text = shape_str(tuple(t.shape))
    return text if t.dtype == torch.float32 else f"{text} {str(t.dtype).removeprefix('torch.')}"


def _op_name(func) -> tuple[str | None, bool]:
    """torch function -> (short name, whether it writes its first argument in place)."""
    name = getattr(func, "__name__", None)
    if name == "__get__":  # a property such as x.T or x.data: resolve_name says which
        attr = (resolve_name(func) or "").split(".")[-2:-1]
        return _TRANSPOSE_GETTERS.get(attr[0] if attr else "", "data"), False
    if not name:
        return None, False
    if name == "__setitem__":
        return "setitem", True
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name.startswith("i") and name[1:] in _DUNDER_OPS:
            return _DUNDER_OPS[name[1:]] + "_", True
        if name.startswith("r") and name[1:] in _DUNDER_OPS:
            return _DUNDER_OPS[name[1:]], False
        return _DUNDER_OPS.get(name, name), False
    return name, name.endswith("_") and not name.startswith("_")


_DUNDER_OPS = {
    "add": "add", "sub": "sub", "mul": "mul", "truediv": "div", "floordiv": "floordiv", "matmul": "matmul",
    "pow": "pow", "mod": "remainder", "and": "and", "or": "or", "xor": "xor", "lshift": "lshift",
    "rshift": "rshift", "getitem": "getitem", "neg": "neg", "invert": "invert", "abs": "abs",
}


def _qualified(func, name: str) -> str:
    """``torch.cat``, ``torch.Tensor.add``; aliases keep the name that was called (torch.mm, not torch.spmm)."""
    full = resolve_name(func) or name
    called = getattr(func, "__name__", name)
    prefix, _, last = full.rpartition(".")
    return full if last == called or not prefix else f"{prefix}.{called}"


def _index_str(index) -> str:
    """The argument of ``x[...]`` in source form: ``[:, 0]``, ``[..., 1:3]``."""
    items = index if isinstance(index, tuple) else (index,)
    return "[" + ", ".join(_index_item(i) for i in items) + "]"


def _index_item(item) -> str:
    if item is None:
        return "None"
    if item is Ellipsis:
        return "..."
    if isinstance(item, slice):
        parts = ["" if v is None else str(v) for v in (item.start, item.stop)]
        text = ":".join(parts)
        return text + (f":{item.step}" if item.step is not None else "")
    if isinstance(item, torch.Tensor):
        return "tensor" if item.dim() else str(item.item()) if item.numel() == 1 else "tensor"
    return repr(item) if not isinstance(item, int) else str(item)


def _call_site() -> tuple[str, int] | None:
    """The first frame outside torch and modscope: the user's line that called the op."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_SKIP_DIRS):
        frame = frame.f_back
    return (frame.f_code.co_filename, frame.f_lineno) if frame is not None else None
