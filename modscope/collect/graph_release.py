"""Free a long autograd graph one node at a time, from the output back.

Once Python has looked at a graph's nodes (``grad_fn``, ``next_functions``, ``register_hook`` on a
non-leaf tensor), torch frees that graph recursively when its output dies: a 50,000-layer chain overflows
the C stack (a segfault). ``graph_nodes`` holds every node; after the caller drops its own references to
the tensors, ``release`` lets them go output-first, so each node dies while its inputs are still held.
"""
from __future__ import annotations

from typing import Any

from modscope.collect.forward.structure import iter_tensors


def graph_nodes(value: Any) -> list:
    """Every autograd node behind the tensors in ``value``, each once, outputs first."""
    stack = [t.grad_fn for t in iter_tensors(value, limit=None) if t.grad_fn is not None]
    seen: dict[int, Any] = {}  # the node objects are kept: a dropped wrapper's id can come back for another node
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        stack.extend(fn for fn, _ in node.next_functions)
    return list(seen.values())


def release(nodes: list) -> None:
    """Drop ``nodes`` (from ``graph_nodes``) output-first; call it after the tensors themselves are dropped."""
    nodes.reverse()
    while nodes:
        nodes.pop()
