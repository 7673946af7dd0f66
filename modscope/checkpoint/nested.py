"""Which state dict inside a nested checkpoint: Lightning's ``{"state_dict": ...}``, ``{"model": ..., "optimizer":
...}``, EMA copies. Pure functions over a tree of dict nodes; readers build the tree, ``select`` picks a node.

Names are the full dotted paths (``state_dict.encoder.weight``); selecting ``state_dict`` keeps the names
below it and strips the prefix. Optimizer state dicts (``state`` + ``param_groups``) are never candidates.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from modscope.errors import CheckpointError

#: A top-level node with this name wins when several hold tensors (Lightning, timm, many training scripts).
PREFERRED = "state_dict"
#: dicts nested deeper than this are refused: no training script nests so deep, and every level's names
#: repeat all the keys above it (a hostile file nesting 100,000 deep would cost the square of that)
MAX_NESTING = 1000


@dataclass
class Node:
    """One dict in the saved object: tensors stored directly in it, and nested dicts holding tensors."""

    tensors: list[str] = field(default_factory=list)  # full names of tensors stored directly here
    children: dict[str, "Node"] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)  # every key of the dict, tensors or not
    scalars: int = 0  # how many of ``tensors`` are 0-d (a saved step counter does not make a state dict)
    depth: int = 0  # how many dicts this one is nested in

    def child(self, key: str) -> "Node":
        node = self.children.get(key)
        if node is None:
            if self.depth >= MAX_NESTING:
                raise CheckpointError(f"the checkpoint nests dicts more than {MAX_NESTING} deep: not a state dict modscope reads")
            node = self.children[key] = Node(depth=self.depth + 1)
            self.keys.add(key)
        return node

    @property
    def is_optimizer(self) -> bool:
        return {"state", "param_groups"} <= self.keys

    def count(self) -> int:
        """Tensors in this subtree, optimizer states excluded."""
        total = 0
        stack = [self]
        while stack:
            node = stack.pop()
            total += len(node.tensors)
            stack.extend(c for c in node.children.values() if not c.is_optimizer)
        return total

    def names(self) -> list[str]:
        out: list[str] = []
        stack = [self]
        while stack:
            node = stack.pop()
            out.extend(node.tensors)
            stack.extend(reversed([c for c in node.children.values() if not c.is_optimizer]))
        return out


def build(paths: dict[str, tuple], tensors: set[str], scalars: set[str] = frozenset()) -> Node:
    """A tree from full name -> path of dict keys (``"model.fc.weight" -> ("model", "fc.weight")``).

    ``paths`` covers every saved value, tensors or not (an optimizer is recognised by its non-tensor
    ``param_groups``); ``tensors`` says which are tensors, ``scalars`` which of those are 0-d.
    """
    root = Node()
    for name, path in paths.items():
        node = root
        for part in path[:-1]:
            node = node.child(str(part))
        node.keys.add(str(path[-1]))
        if name in tensors:
            node.tensors.append(name)
            node.scalars += name in scalars
    return root


@dataclass(frozen=True)
class Selection:
    """The chosen state dict: its key path ("" for the root), full names, and the other candidates."""

    key: str
    names: tuple[str, ...]
    candidates: tuple[tuple[str, int], ...]  # (key, number of tensors) of every state dict found


def select(root: Node | None, all_names: list[str], key: str | None, where: str) -> Selection:
    """Pick the state dict named by ``key``, or the only/obvious one; list the candidates when ambiguous."""
    if root is None:  # a flat file: ``key`` is a name prefix
        return _select_prefix(all_names, key, where)
    found = candidates(root)
    if key is not None:
        node = _find(root, key)
        if node is None or not node.count():
            return _select_prefix(all_names, key, where, found)
        return Selection(key, tuple(node.names()), tuple(found))
    path: list[str] = []
    node = root
    while not _holds_weights(node):
        kids = {k: c for k, c in node.children.items() if not c.is_optimizer and c.count()}
        if not kids:
            break
        if len(kids) > 1:
            if not path and PREFERRED in kids:
                kids = {PREFERRED: kids[PREFERRED]}
            else:
                listing = ", ".join(f"{k} ({n} tensors)" for k, n in found)
                raise CheckpointError(f"{where} holds several state dicts; choose one with --key: {listing}")
        (name, node), = kids.items()
        path.append(name)
    return Selection(".".join(path), tuple(node.names()), tuple(found))


def candidates(root: Node) -> list[tuple[str, int]]:
    """Every dict that directly holds non-scalar tensors, as (key path, tensors in its subtree)."""
    out: list[tuple[str, int]] = []
    stack: list[tuple[str, Node]] = [("", root)]
    while stack:
        path, node = stack.pop()
        if node.is_optimizer:
            continue
        if _holds_weights(node):
            out.append((path, node.count()))
            continue
        for key in reversed(list(node.children)):
            stack.append((f"{path}.{key}" if path else key, node.children[key]))
    return out


def _holds_weights(node: Node) -> bool:
    return len(node.tensors) > node.scalars


def _find(root: Node, key: str) -> Node | None:
    """``key`` as a top-level dict key first (keys may contain dots), then as a dotted path."""
    if key in ("", "."):
        return root
    if key in root.children:
        return root.children[key]
    node = root
    parts = key.split(".")
    i = 0
    while i < len(parts):  # greedy: the longest dotted run that is one dict key
        for j in range(len(parts), i, -1):
            part = ".".join(parts[i:j])
            if part in node.children:
                node = node.children[part]
                i = j
                break
        else:
            return None
    return node


def _select_prefix(names: list[str], key: str | None, where: str, found=()) -> Selection:
    if not key or key == ".":
        return Selection("", tuple(names), tuple(found))
    prefix = key.rstrip(".") + "."
    chosen = tuple(n for n in names if n.startswith(prefix))
    if not chosen:
        hint = (
            "; it holds: " + ", ".join(f"{k or '(root)'} ({n} tensors)" for k, n in found)
            if found
            else f"; its names start with: {_heads(names)}"
        )
        raise CheckpointError(f"--key {key!r}: no state dict or name prefix {key!r} in {where}{hint}")
    return Selection(key.rstrip("."), chosen, tuple(found))


def _heads(names: list[str], limit: int = 6) -> str:
    heads = list(dict.fromkeys(n.split(".", 1)[0] for n in names))
    return ", ".join(heads[:limit]) + (" ..." if len(heads) > limit else "") if heads else "(no tensors)"
