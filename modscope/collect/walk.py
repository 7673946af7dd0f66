"""Iterative module traversal: no recursion, so 2,000-deep chains and 50,000-module models are fine.

``nn.Module.named_modules`` and ``state_dict`` recurse once per level and overflow Python's stack on very
deep models; everything in modscope walks ``_modules`` with an explicit stack instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn


@dataclass
class Visit:
    """One place a module is reachable at. ``first`` is False for second and later names of a module."""

    name: str
    module: nn.Module
    depth: int
    parent: str | None
    first: bool


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def visits(root: nn.Module) -> list[Visit]:
    """Every (name, module) pair in pre-order, like ``named_modules(remove_duplicate=False)``.

    A module met again is reported with ``first=False``; its subtree is still walked (so every state_dict
    name is produced) unless that would loop forever (a module inside itself).
    """
    out: list[Visit] = []
    seen: set[int] = set()
    # stack items: (name, module, depth, parent name, chain of ancestor ids as a linked tuple)
    stack: list[tuple] = [("", root, 0, None, None)]
    while stack:
        name, module, depth, parent, chain = stack.pop()
        key = id(module)
        first = key not in seen
        if not first and _in_chain(chain, key):
            continue  # a cycle: stop here
        seen.add(key)
        out.append(Visit(name, module, depth, parent, first))
        link = (key, chain)
        children = [(k, m) for k, m in module._modules.items() if m is not None]
        for k, child in reversed(children):
            stack.append((join(name, k), child, depth + 1, name, link))
    return out


def _in_chain(chain, key: int) -> bool:
    while chain is not None:
        if chain[0] == key:
            return True
        chain = chain[1]
    return False
